"""Frozen TorchScript that follows new parameter versions: the fast module, refreshed in place.

On the CPU, ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference`` turn a scripted model into a graph
whose parameters are constants, convolution weights reordered once into oneDNN's blocked layout and
activations kept in that layout between layers. Batch-1 passes get much faster (measured here, one
thread: impala k=1 3.0 -> 1.5 ms, k=7 53 -> 43 ms), but the module has no parameters left: a new version
cannot be bound to it, and building a new one costs a freeze (k=7: ~45 ms of graph passes that hold the
GIL) and is not serializable, so it cannot be built in another process.

:class:`RefreshableFrozen` builds the optimized graph once and then refreshes its constants *in place*:
each constant is matched, by value, to the parameter it was made from and to the transform the freeze
applied (none, a transpose, a reshape, a oneDNN tensor, a oneDNN convolution-weight reorder). A new
version is then one copy per parameter (aten ops, which release the GIL), a few milliseconds for k=7,
with no graph pass. The match is checked, not assumed:

- the template the graph is built from has seeded random parameters, so no two constants can be equal by
  chance (the freeze pools equal constants);
- every parameter must be found among the constants, and every floating-point constant must be a parameter
  or one of the module's buffers (a constant folded from several parameters, like a noisy layer's
  ``mu + sigma * eps`` or a convolution folded with a batch norm, has no in-place refresh: such a module is
  refused with :class:`FrozenUnsupported`);
- after building, the module is refreshed to a second random version and its output compared with the
  scripted module's on that version.

:class:`FrozenFollower` is what an inference worker runs: two refreshable copies, the worker acting on one
while a thread refreshes the other from the newest :class:`rtcore.ParamStore` version (pinned for the
copy, so never a mix of two versions) and hands it over at the worker's next turn. The worker never waits
for a refresh; the version it acts on trails the newest by the refresh time plus at most one turn (the
worker's telemetry sums that lag). Memory: two private copies of the parameters per worker.

CPU only: on CUDA, ``optimize_for_inference`` does not apply oneDNN and this path has not been measured.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["FrozenUnsupported", "RefreshableFrozen", "FrozenFollower"]


class FrozenUnsupported(ValueError):
    """The module's frozen graph has a constant that cannot be refreshed in place from one parameter."""


@dataclass
class _Slot:
    const: torch.Tensor      # the graph's constant (dense or oneDNN), written in place
    param: int               # index into module.parameters()
    kind: str                # "same", "t", "reshape", "mkldnn", "conv"
    conv: tuple[list[int], list[int], list[int], int] | None = None  # padding, stride, dilation, groups


_CONST_KINDS = ("prim::Constant", "prim::ConstantMKLDNNTensor")


def _tensor_constants(graph: Any) -> list[tuple[Any, torch.Tensor]]:
    out = []
    for node in graph.nodes():
        if (node.kind() in _CONST_KINDS and node.hasAttribute("value") and node.kindOf("value") == "t"
                and node.output().uses()):
            out.append((node, node.t("value")))
    return out


def _conv_args(node: Any, value: Any) -> tuple[list[int], list[int], list[int], int] | None:
    """(padding, stride, dilation, groups) of the oneDNN convolution that takes ``value`` as its weight."""
    for use in value.uses():
        user = use.user
        if user.kind() == "prim::mkldnn_convolution" and use.offset == 1:
            # prim::mkldnn_convolution(input, weight, bias, stride, padding, dilation, groups)
            ins = list(user.inputs())
            stride, padding, dilation, groups = (i.toIValue() for i in ins[3:7])
            return list(padding), list(stride), list(dilation), int(groups)
    return None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def _release_heap() -> None:
    """Returns freed heap memory to the system (glibc's ``malloc_trim``; elsewhere nothing): building the
    frozen copies frees several model-sized temporaries that the allocator would otherwise keep."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RefreshableFrozen:
    """A frozen, inference-optimized copy of ``scripted`` whose constants are refreshed in place.

    Args:
        scripted: a TorchScript module (``torch.jit.script``; left untouched: a copy is frozen).
        example: the inputs of one forward pass (a tuple; e.g. ``(frames,)`` or ``(frames, history)``),
            used to check the refreshed graph against ``scripted``.
        optimize: run ``torch.jit.optimize_for_inference`` after freezing (the CPU speed-up).
        seed: seed of the template's random parameters and of the check's version.

    Raises :class:`FrozenUnsupported` when a constant of the frozen graph cannot be traced back to a single
    parameter, or when the check fails.
    """

    def __init__(self, scripted: torch.jit.ScriptModule, example: Sequence[torch.Tensor], *,
                 optimize: bool = True, seed: int = 0) -> None:
        if not isinstance(scripted, torch.jit.ScriptModule):
            raise TypeError(f"scripted must be a TorchScript module, got {type(scripted).__name__}")
        from rtcore.models.export import _quiet_jit

        template = copy.deepcopy(scripted).eval()
        params = list(template.parameters())
        if not params:
            raise FrozenUnsupported("the module has no parameters (already frozen?)")
        self.numel = sum(p.numel() for p in params)
        self.shapes = [tuple(p.shape) for p in params]
        self._numels = [p.numel() for p in params]
        if params[0].device.type != "cpu":
            raise FrozenUnsupported(f"frozen workers run on the CPU only, the module is on {params[0].device}")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in params:  # distinct values: the freeze pools equal constants, the match goes by value
                p.data = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            values = [p.detach() for p in params]  # the freeze copies or aliases them; neither writes them
            buffers = [b.detach() for b in template.buffers()]
        with _quiet_jit():
            frozen = torch.jit.freeze(template)
            if optimize:
                frozen = torch.jit.optimize_for_inference(frozen)
        # the optimization leaves the replaced constants in the graph, unused (a linear layer's weight
        # beside its pre-transposed copy): dropped, they cost neither memory nor refresh time
        torch._C._jit_pass_dce(frozen.graph)
        self.module = frozen
        self._slots = self._match(frozen.graph, values, buffers)
        del values, buffers, params
        self.version = 0
        self._check(template, example, seed + 1)  # the template is the reference: freezing did not change it

    # ---- building ------------------------------------------------------------------------------------

    def _match(self, graph: Any, values: list[torch.Tensor], buffers: list[torch.Tensor]) -> list[_Slot]:
        by_numel: dict[int, list[int]] = {}
        for i, v in enumerate(values):
            by_numel.setdefault(v.numel(), []).append(i)
        slots: list[_Slot] = []
        found = [False] * len(values)
        for node, const in _tensor_constants(graph):
            if not const.is_floating_point():
                continue
            dense = const.to_dense() if const.is_mkldnn else const
            slot = None
            for i in by_numel.get(dense.numel(), ()):
                v = values[i]
                if const.is_mkldnn:
                    if _same(dense, v.reshape(dense.shape)):
                        conv = _conv_args(node, node.output()) if dense.dim() == 4 else None
                        slot = _Slot(const, i, "conv" if conv else "mkldnn", conv)
                elif _same(dense, v):
                    slot = _Slot(const, i, "same")
                elif v.dim() == 2 and _same(dense, v.t()):
                    slot = _Slot(const, i, "t")
                elif _same(dense, v.reshape(dense.shape)):
                    slot = _Slot(const, i, "reshape")
                if slot is not None:
                    break
            if slot is not None:
                slots.append(slot)
                found[slot.param] = True
            elif not any(_same(dense, b) for b in buffers if b.numel() == dense.numel()):
                raise FrozenUnsupported(
                    f"the frozen graph has a constant of shape {tuple(dense.shape)} ({node.output().debugName()}) that is "
                    f"neither one parameter (as is, transposed, reshaped or in oneDNN layout) nor a buffer: the freeze "
                    f"folded several parameters into it (e.g. a noisy layer or a batch norm), so it cannot follow new "
                    f"versions in place; run this model with backend 'script'")
        missing = [i for i, ok in enumerate(found) if not ok]
        if missing:
            raise FrozenUnsupported(
                f"{len(missing)} parameter(s) (first: #{missing[0]} of shape {self.shapes[missing[0]]}) are not a "
                f"constant of the frozen graph as they are: the freeze transformed them, so they cannot follow new "
                f"versions in place; run this model with backend 'script'")
        return slots

    def _check(self, ref: torch.jit.ScriptModule, example: Sequence[torch.Tensor], seed: int) -> None:
        from rtcore.shared.params import bind_flat

        gen = torch.Generator().manual_seed(seed)
        flat = torch.randn(self.numel, generator=gen)
        bind_flat(ref, flat)
        self.refresh(flat)
        with torch.inference_mode():
            want = ref(*example)
            got = self.module(*example)
        tol = 1e-4 * max(1.0, float(want.abs().max()))
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=tol):
            err = float((got - want).abs().max()) if got.shape == want.shape else float("nan")
            raise FrozenUnsupported(f"the refreshed frozen module disagrees with the scripted one (max error {err:.3g}, "
                                    f"tolerance {tol:.3g}); run this model with backend 'script'")
        self.version = 0

    # ---- following versions ----------------------------------------------------------------------------

    def refresh(self, flat: torch.Tensor | Sequence[torch.Tensor], version: int = 0) -> None:
        """Writes a new version into the graph's constants: ``flat`` is one 1-D tensor of every parameter in
        ``parameters()`` order (a ParamStore buffer), or a sequence of tensors shaped like the parameters.
        The module must not run meanwhile (another thread may run another instance)."""
        if isinstance(flat, torch.Tensor):
            if flat.dim() != 1 or flat.numel() != self.numel:
                raise ValueError(f"flat has shape {tuple(flat.shape)}, expected ({self.numel},)")
            parts = [t.view(shape) for t, shape in zip(flat.split(self._numels), self.shapes)]
        else:
            parts = list(flat)
            if [tuple(p.shape) for p in parts] != self.shapes:
                raise ValueError("parameter shapes differ from the module's")
        with torch.no_grad():
            for s in self._slots:
                v = parts[s.param]
                if s.kind == "same":
                    s.const.copy_(v)
                elif s.kind == "t":
                    s.const.copy_(v.t())
                elif s.kind == "reshape":
                    s.const.copy_(v.reshape(s.const.shape))
                elif s.kind == "conv":
                    padding, stride, dilation, groups = s.conv  # type: ignore[misc]
                    s.const.copy_(torch._C._nn.mkldnn_reorder_conv2d_weight(
                        v.contiguous().to_mkldnn(), padding, stride, dilation, groups))
                else:
                    s.const.copy_(v.reshape(s.const.shape).contiguous().to_mkldnn())
        self.version = int(version)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*inputs)


class FrozenFollower:
    """An inference worker's frozen module, kept near the newest ParamStore version off the hot path.

    Two :class:`RefreshableFrozen` copies: the worker runs :attr:`module` (the active one); a thread pins
    the newest version when asked, writes it into the other copy and marks it ready; :meth:`turn` (the
    worker calls it at the start of each turn) swaps a ready copy in and asks for the next version when
    the store has one. The thread never writes the copy the worker runs.

    Args:
        store: the run's :class:`rtcore.ParamStore` (the thread attaches its own handle: one pin per handle).
        scripted, example: as for :class:`RefreshableFrozen`.
    """

    def __init__(self, store: Any, scripted: torch.jit.ScriptModule, example: Sequence[torch.Tensor], *,
                 seed: int = 0) -> None:
        from rtcore.shared.params import ParamStore

        self._copies = [RefreshableFrozen(scripted, example, seed=seed),
                        RefreshableFrozen(scripted, example, seed=seed + 2)]
        if self._copies[0].numel != store.numel:
            raise ValueError(f"module has {self._copies[0].numel} parameters, the store {store.numel}")
        _release_heap()  # the builds' temporaries (templates, check versions) would stay in the malloc heap
        self._store = ParamStore.attach(store.name)
        self._newest = store  # the caller's handle: reads the version number only
        self._active = 0
        self._ready = False       # the standby copy holds a newer version, waiting for turn()
        self._closed = False
        self._want = threading.Event()
        self._error: BaseException | None = None
        self.refreshes = 0       # versions written by the thread (and the first, by start())
        self.refresh_s = 0.0     # seconds spent writing them
        self._thread: threading.Thread | None = None

    @property
    def module(self) -> RefreshableFrozen:
        """The copy to run now (call :meth:`turn` first in each turn)."""
        return self._copies[self._active]

    @property
    def version(self) -> int:
        """Version of the active copy (0: none yet)."""
        return self._copies[self._active].version

    def start(self, timeout: float = 5.0) -> int:
        """Loads the newest version into the active copy here (waiting up to ``timeout`` s for a first one),
        then starts the refresh thread; returns the version."""
        self._load(self._active, timeout)
        self._thread = threading.Thread(target=self._run, name="rtcore-frozen-refresh", daemon=True)
        self._thread.start()
        return self.version

    def turn(self) -> int:
        """At a turn's start: swap in a refreshed copy if one is ready, ask for the newest version if the
        store has a newer one; returns how many versions the active copy trails the newest by."""
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError("the frozen module's refresh thread failed") from err
        if self._ready:
            self._active ^= 1
            self._ready = False
        newest = self._newest.version
        lag = max(0, newest - self.version)
        if lag and not self._ready:
            self._want.set()
        return lag

    def close(self) -> None:
        self._closed = True
        self._want.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._store.close()

    # ---- the refresh thread ------------------------------------------------------------------------------

    def _load(self, which: int, timeout: float) -> None:
        version, b = self._store.pin_buffer(timeout)
        try:
            if version > self._copies[which].version:
                t0 = time.monotonic()
                self._copies[which].refresh(torch.from_numpy(self._store.buffer_view(b)), version)
                self.refresh_s += time.monotonic() - t0
                self.refreshes += 1
        finally:
            self._store.unpin()

    def _run(self) -> None:
        torch.set_num_threads(1)
        try:
            while True:
                self._want.wait()
                self._want.clear()
                if self._closed:
                    return
                if self._ready:
                    continue  # the worker has not taken the last one yet; it asks again after the swap
                standby = self._active ^ 1
                before = self._copies[standby].version
                self._load(standby, 5.0)
                if self._copies[standby].version > max(before, self._copies[self._active].version):
                    self._ready = True  # last: the copy is complete (the GIL orders these writes)
        except BaseException as e:  # surfaced in the worker at its next turn
            self._error = e
