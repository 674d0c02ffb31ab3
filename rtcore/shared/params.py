"""Model parameters in shared memory: learners publish versions, inference workers pin the newest.

    store = ParamStore.for_module(model, buffers=n_workers + 2)    # learner side; publishes version 1
    store.publish(model.parameters())                                # -> 2 (or -1: skipped, see below)

    # inference worker (another process; the store pickles as its name):
    reader = ParamReader(store, scripted_model)     # CPU: the model's parameters become views of shared memory
    with reader.pinned() as version:                 # the newest complete version, fixed for this turn
        q = scripted_model(frames)

Guarantees (see csrc/params/param_store.h for the protocol):

- A reader never sees a mix of two versions: the buffer it pins is never written while it is pinned, and
  versions it pins never go backwards.
- On the CPU picking up a version copies nothing: the model's parameters are views of the pinned buffer
  (switching buffers re-points a few dozen tensors). On CUDA a worker copies the pinned buffer to the
  device once per new version; :meth:`ParamReader.prefetch` starts that copy on a side stream right
  after a turn, so it overlaps the wait for the next one.
- ``publish`` never blocks a learner by default: if another live process is publishing, or every buffer
  other than the newest is pinned by a live reader, it returns -1 and publishes nothing (the learner's
  next publish carries newer parameters anyway). With R readers that can each hold one superseded
  version, ``buffers >= R + 2`` means a publish is never skipped for want of a buffer. ``timeout=``
  makes it wait instead.
- A reader or writer process that dies (even by SIGKILL) while holding a pin or the write claim blocks
  nothing for long: the next publish that needs its buffer checks the owner's pid and start time and
  takes the pin back.

One handle holds at most one pin at a time; threads that read concurrently each attach their own handle.

Length: the store, the one function that binds a module to a flat buffer, and the reader that keeps a
worker's module on the newest version (CPU views, CUDA double buffer) are one protocol, kept together.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import numpy as np

from rtcore import _core
from rtcore._validate import FOREVER_SECONDS, index, seconds
from rtcore.errors import StateError
from rtcore.shared._shm import SharedObject

__all__ = ["ParamStore", "ParamReader", "bind_flat", "module_numel"]

_DTYPE_CODES = {"float32": 0, "float16": 1, "float64": 2}
_CODE_DTYPES = {v: np.dtype(k) for k, v in _DTYPE_CODES.items()}
_MAX_NUMEL = 2**40  # the core refuses stores above 1 TiB per buffer (element size included)

ArrayLike = Any  # a numpy array or a torch tensor


def _dtype_name(dtype: Any) -> str:
    """'float32' for np.float32, torch.float32, 'float32', ..."""
    name = str(dtype).replace("torch.", "")
    try:
        name = np.dtype(name).name
    except TypeError:
        pass
    if name not in _DTYPE_CODES:
        raise ValueError(f"dtype {dtype!r} is not supported; expected one of {', '.join(_DTYPE_CODES)}")
    return name


class ParamStore(SharedObject):
    """A versioned flat parameter store in shared memory (``buffers`` complete copies of ``numel`` values).

    Args:
        numel: number of parameters (elements).
        dtype: ``"float32"`` (default), ``"float16"`` or ``"float64"`` (numpy or torch dtypes also accepted).
        buffers: copies kept, >= 2. Readers pin one each; a publish needs one that is neither the newest nor
            pinned. ``readers + 2`` guarantees a publish is never skipped for want of a buffer.
        name: shared-memory segment name (default: a fresh one). Other processes ``attach(name)``, or
            receive the store pickled.
        max_readers: reader slots (one per handle that ever calls ``read``/``pin``; dead owners' slots are
            reclaimed).
    """

    _KIND = "params"
    _CORE = _core.Params

    def __init__(self, numel: int, dtype: Any = "float32", buffers: int = 3, name: str | None = None, *,
                 max_readers: int = 64) -> None:
        if not isinstance(numel, (int, np.integer)) or isinstance(numel, bool) or numel < 1:
            raise ValueError(f"numel must be a positive integer, got {numel!r}")
        if numel > _MAX_NUMEL:
            raise ValueError(f"numel must be at most 2**40 / the dtype's size, got {numel!r}")
        if not isinstance(buffers, (int, np.integer)) or isinstance(buffers, bool) or not 2 <= buffers <= 64:
            raise ValueError(f"buffers must be an integer in [2, 64], got {buffers!r}")
        if not isinstance(max_readers, (int, np.integer)) or isinstance(max_readers, bool) or not 1 <= max_readers <= 4096:
            raise ValueError(f"max_readers must be an integer in [1, 4096], got {max_readers!r}")
        code = _DTYPE_CODES[_dtype_name(dtype)]
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, int(numel), code, int(buffers), int(max_readers)),
                    name, owner=True)

    @classmethod
    def for_module(cls, module: Any, *, dtype: Any = None, buffers: int = 3, name: str | None = None,
                   max_readers: int = 64, publish: bool = True) -> "ParamStore":
        """A store sized for ``module``'s parameters (in ``module.parameters()`` order), dtype defaulting to
        theirs; with ``publish`` (default) their current values become version 1."""
        params = list(module.parameters())
        if not params:
            raise ValueError("module has no parameters (a frozen TorchScript module keeps them as constants)")
        store = cls(module_numel(module), dtype if dtype is not None else params[0].dtype, buffers, name,
                    max_readers=max_readers)
        if publish:
            store.publish(params)
        return store

    def _from_handle(self, handle: Any) -> None:
        self._views = [handle.buffer_view(b) for b in range(handle.buffers)]
        self._dtype = _CODE_DTYPES[handle.dtype_code]

    # ---- properties ------------------------------------------------------------------------------------

    @property
    def numel(self) -> int:
        """Parameters (elements) per version."""
        return int(self._h.numel)

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the stored values."""
        return self._dtype

    @property
    def buffers(self) -> int:
        """Complete copies kept in the segment."""
        return int(self._h.buffers)

    @property
    def max_readers(self) -> int:
        """Reader slots."""
        return int(self._h.max_readers)

    @property
    def version(self) -> int:
        """The newest published version (0: none yet). Versions count up from 1."""
        return int(self._h.version)

    def stats(self) -> dict[str, int]:
        """Counters: ``version``; ``published`` versions; write attempts that found no free buffer
        (``skipped_no_buffer``) or another live writer (``skipped_writer_busy``), each retry of a waiting
        publish counting once; pins of dead readers and claims of dead writers taken back
        (``reclaimed_readers``, ``reclaimed_writers``)."""
        return dict(self._h.stats())

    # ---- writer ----------------------------------------------------------------------------------------

    def publish(self, params: ArrayLike | Iterable[ArrayLike], timeout: float = 0.0, *, check_finite: bool = True) -> int:
        """Publishes a complete new version and returns its number, or -1 if it was skipped.

        ``params`` is one 1-D array/tensor of ``numel`` values, or a sequence of arrays/tensors (e.g.
        ``module.parameters()``) whose sizes add up to ``numel``, copied in order. CPU tensors and numpy
        arrays of the store's dtype are copied straight into shared memory; others are converted first.
        Skipped (-1) when no buffer is free (all non-newest buffers pinned by live readers) or another
        live process is publishing, after waiting up to ``timeout`` seconds (default: no wait).

        ``check_finite`` (default): a NaN or infinite value is refused with ``ValueError`` and nothing is
        published (a diverged learner must not hand NaNs to every worker). The check is one float64 sum
        over the values (no allocation); an element-wise pass runs only when that sum is not finite.
        """
        t = _timeout("timeout", timeout)
        if _is_array(params):
            items = [params]
        else:
            try:
                items = list(params)
            except TypeError:
                raise TypeError(f"params must be an array, a tensor or an iterable of them, got {type(params).__name__}") from None
        parts = [self._as_part(p, i) for i, p in enumerate(items)]
        if check_finite:
            for i, p in enumerate(parts):
                with np.errstate(all="ignore"):
                    if not np.isfinite(p.sum(dtype=np.float64)) and not np.isfinite(p).all():
                        bad = p[~np.isfinite(p)][0]
                        raise ValueError(f"parameters part {i} has a non-finite value ({bad!r}); nothing was published")
        return int(self._h.publish(parts, t))

    def _as_part(self, x: ArrayLike, i: int = 0) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            torch = _torch_or_none()
            if torch is None or not isinstance(x, torch.Tensor):
                raise TypeError(f"parameters part {i} must be a numpy array or a torch tensor, got {type(x).__name__}")
            x = x.detach().to(device="cpu", dtype=getattr(torch, self._dtype.name)).contiguous().numpy()
        if x.dtype.kind not in "biuf":
            raise TypeError(f"parameters part {i} has dtype {x.dtype}, expected a numeric dtype ({self._dtype})")
        return np.ascontiguousarray(x, dtype=self._dtype).reshape(-1)

    # ---- readers ---------------------------------------------------------------------------------------

    def pin(self, timeout: float = 5.0) -> tuple[int, np.ndarray]:
        """Pins the newest version and returns ``(version, view)``: a zero-copy view of shared memory that
        nothing writes until :meth:`unpin`. Waits up to ``timeout`` s for a first version (TimeoutError).
        One pin per handle: ``rtcore.BusyError`` if this handle already holds one.
        Do not write to the view, and do not use it after ``unpin``."""
        version, buffer = self._h.pin(_timeout("timeout", timeout))
        return int(version), self._views[buffer]

    def pin_buffer(self, timeout: float = 5.0) -> tuple[int, int]:
        """Like :meth:`pin`, returning the buffer index instead of its view."""
        version, buffer = self._h.pin(_timeout("timeout", timeout))
        return int(version), int(buffer)

    def unpin(self) -> None:
        """Releases this handle's pin (no error if it holds none)."""
        self._h.unpin()

    @contextlib.contextmanager
    def read(self, timeout: float = 5.0) -> Iterator[tuple[int, np.ndarray]]:
        """``with store.read() as (version, view): ...`` pins the newest version for the block."""
        pinned = self.pin(timeout)
        try:
            yield pinned
        finally:
            self.unpin()

    def buffer_view(self, buffer: int) -> np.ndarray:
        """Zero-copy view of one buffer (whatever version it holds; pin before relying on its contents)."""
        b = index("buffer", buffer)
        if not 0 <= b < len(self._views):
            raise IndexError(f"buffer {b} out of range [0, {len(self._views)})")
        return self._views[b]

    def buffer_address(self, buffer: int) -> int:
        """Address of buffer ``buffer`` in this process (for a CUDA host registration)."""
        b = index("buffer", buffer)
        if not 0 <= b < self.buffers:
            raise IndexError(f"buffer {b} out of range [0, {self.buffers})")
        return int(self._h.buffer_address(b))

    @property
    def buffer_stride(self) -> int:
        """Bytes from one buffer to the next (page-aligned)."""
        return int(self._h.buffer_stride)

    def close(self) -> None:
        """Drop the buffer views and detach (the creator also unlinks the segment)."""
        self._views = []
        super().close()


def _timeout(what: str, timeout: Any) -> float:
    """A wait in seconds for the core: finite and >= 0 (NaN, inf and negative refused), capped at the
    core's "forever"."""
    return min(seconds(what, timeout, positive=False), FOREVER_SECONDS)


def _is_array(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    torch = _torch_or_none()
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_or_none() -> Any:
    import sys

    return sys.modules.get("torch")


# ---- modules <-> flat buffers ------------------------------------------------------------------------------


def _params(module: Any) -> list[Any]:
    params = list(module.parameters())
    if not params:
        raise ValueError("module has no parameters to bind (a frozen TorchScript module keeps them as constants; "
                         "use frozen=False for a module that picks up new versions)")
    return params


def module_numel(module: Any) -> int:
    """Number of parameter elements of ``module`` (the size of its flat buffer)."""
    return sum(p.numel() for p in _params(module))


def bind_flat(module: Any, view: ArrayLike | None = None, *, device: Any = None):
    """Makes every parameter of ``module`` a view of one flat 1-D buffer and returns that buffer (a tensor).

    The buffer is in ``module.parameters()`` order, the ParamStore's order, so loading a version is one
    copy (``flat.copy_(src)``), reading one is ``flat.clone()`` and a gradient gathers in the same layout.

    - ``view=None``: a new buffer (float32, on ``device`` or the module's device) receives the current
      values; used by learners and to take a model's parameters out.
    - ``view`` given (a numpy array or tensor of the module's dtype and device, e.g. a pinned
      ParamStore buffer): the module runs on whatever ``view`` holds, with no copy. Works for eager,
      TorchScript (not frozen) and ``torch.export`` modules.
    """
    import torch

    params = _params(module)
    with torch.no_grad():
        if view is None:
            dev = params[0].device if device is None else torch.device(device)
            flat = torch.cat([p.detach().reshape(-1).to(dev, torch.float32) for p in params])
        else:
            flat = torch.from_numpy(view) if isinstance(view, np.ndarray) else view
            _check_flat(params, flat)
            if flat.device != params[0].device:
                raise ValueError(f"flat buffer is on {flat.device}, the module on {params[0].device}")
        for p, t in zip(params, _slices(params, flat)):
            p.data = t
    return flat


def _slices(params: list[Any], flat: Any) -> list[Any]:
    off, out = 0, []
    for p in params:
        n = p.numel()
        out.append(flat[off:off + n].view(p.shape))
        off += n
    return out


def _check_flat(params: list[Any], flat: Any) -> None:
    total = sum(p.numel() for p in params)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(f"flat buffer has shape {tuple(flat.shape)}, expected ({total},) for this module")
    if flat.dtype != params[0].dtype:
        raise ValueError(f"flat buffer has dtype {flat.dtype}, expected {params[0].dtype} (the module's)")


class ParamReader:
    """Keeps an inference module's parameters at the newest published version, one turn at a time.

    CPU: the module's parameters are views of the pinned shared-memory buffer (zero copy); the pin is held
    from :meth:`acquire` to :meth:`release`, so the module must run only in between.

    CUDA: the module's parameters live in one of two flat device buffers; a new version is copied
    host-to-device (the store's buffers are registered as page-locked memory when possible, so the copy
    is a DMA on a side stream). :meth:`prefetch` (call it right after a turn) starts the copy of a newer
    version, overlapping the wait for the next turn; :meth:`acquire` finishes it and switches the module
    to it. The host pin is held only while a copy runs; the module always runs a complete version.
    """

    def __init__(self, store: ParamStore, module: Any) -> None:
        import torch

        self._torch = torch
        self._store = store
        self._module = module
        self._params = _params(module)
        self._device = self._params[0].device
        if module_numel(module) != store.numel:
            raise ValueError(f"module has {module_numel(module)} parameters, the store {store.numel}")
        if _dtype_name(self._params[0].dtype) != store.dtype.name:
            raise ValueError(f"module parameters are {self._params[0].dtype}, the store holds {store.dtype.name}")
        self._version = 0  # the version the module runs
        self._host_slices: dict[int, list[Any]] = {}
        self._bound = -1
        self._holding = False
        if self._device.type == "cuda":
            self._setup_cuda()

    @property
    def version(self) -> int:
        """The version the module currently runs (0: none yet)."""
        return self._version

    @property
    def device(self) -> Any:
        return self._device

    @property
    def host_registered(self) -> bool:
        """CUDA: whether the store's buffers are page-locked for this process (asynchronous copies)."""
        return bool(self._device.type == "cuda" and self._registered)

    def acquire(self, timeout: float = 5.0) -> int:
        """Points the module at the newest complete version (waiting up to ``timeout`` s for a first one)
        and returns it. CPU: holds a pin until :meth:`release`."""
        if self._device.type == "cuda":
            return self._acquire_cuda(timeout)
        if self._holding:
            raise StateError("ParamReader.acquire() called twice without release()")
        version, b = self._store.pin_buffer(timeout)
        self._holding = True
        if b != self._bound:
            slices = self._host_slices.get(b)
            if slices is None:
                flat = self._torch.from_numpy(self._store.buffer_view(b))
                slices = self._host_slices[b] = _slices(self._params, flat)
            with self._torch.no_grad():
                for p, t in zip(self._params, slices):
                    p.data = t
            self._bound = b
        self._version = version
        return version

    def release(self) -> None:
        """Ends the turn: on the CPU, unpins (the module must not run again before the next acquire)."""
        if self._holding:
            self._store.unpin()
            self._holding = False

    @contextlib.contextmanager
    def pinned(self, timeout: float = 5.0) -> Iterator[int]:
        """``with reader.pinned() as version: q = module(x)``"""
        version = self.acquire(timeout)
        try:
            yield version
        finally:
            self.release()

    def prefetch(self) -> bool:
        """CUDA: starts copying a newer version to the device, if there is one and no copy is in flight.
        Returns True if a copy started. A no-op (False) on the CPU, where nothing needs copying."""
        if self._device.type != "cuda" or self._pending is not None or self._store.version <= self._version:
            return False
        self._start_copy(timeout=0.0)
        return True

    def close(self) -> None:
        """Releases any pin and unregisters page-locked host memory."""
        self.release()
        if self._device.type == "cuda":
            if self._pending is not None:
                self._pending[0].synchronize()
                self._store.unpin()
                self._pending = None
            if self._registered:
                cudart = self._torch.cuda.cudart()
                for addr in self._registered:
                    cudart.cudaHostUnregister(addr)
                self._registered = []

    # ---- CUDA ------------------------------------------------------------------------------------------

    def _setup_cuda(self) -> None:
        torch = self._torch
        n, dt = self._store.numel, self._params[0].dtype
        self._dev_flat = [torch.empty(n, dtype=dt, device=self._device) for _ in range(2)]
        self._dev_slices = [_slices(self._params, f) for f in self._dev_flat]
        with torch.no_grad():  # the module's current values stay until the first version arrives
            self._dev_flat[0].copy_(torch.cat([p.detach().reshape(-1) for p in self._params]))
            for p, t in zip(self._params, self._dev_slices[0]):
                p.data = t
        self._front = 0
        self._stream = torch.cuda.Stream(device=self._device)
        self._pending: tuple[Any, int] | None = None
        self._host = [torch.from_numpy(self._store.buffer_view(b)) for b in range(self._store.buffers)]
        # Page-lock the store's buffers so copies from them are asynchronous DMA. Best effort: pageable
        # memory still works, with a staged (slower, host-synchronous) copy.
        self._registered: list[int] = []
        cudart = torch.cuda.cudart()
        start = self._store.buffer_address(0)
        size = self._store.buffer_stride * self._store.buffers
        try:
            ok = int(cudart.cudaHostRegister(start, size, 0)) == 0
        except (AttributeError, RuntimeError):
            ok = False
        if ok:
            self._registered.append(start)

    def _start_copy(self, timeout: float) -> None:
        torch = self._torch
        version, b = self._store.pin_buffer(timeout)
        back = 1 - self._front
        compute = torch.cuda.current_stream(self._device)
        self._stream.wait_stream(compute)  # the previous turn's kernels are done with the back buffer
        with torch.cuda.stream(self._stream):
            self._dev_flat[back].copy_(self._host[b], non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        self._pending = (event, version)

    def _finish_copy(self) -> None:
        event, version = self._pending  # type: ignore[misc]
        event.synchronize()  # the copy was started a turn ago: normally long done
        self._store.unpin()
        self._pending = None
        back = 1 - self._front
        with self._torch.no_grad():
            for p, t in zip(self._params, self._dev_slices[back]):
                p.data = t
        self._front = back
        self._version = version

    def _acquire_cuda(self, timeout: float) -> int:
        if self._pending is None and (self._version == 0 or self._store.version > self._version):
            self._start_copy(timeout)
        if self._pending is not None:
            self._finish_copy()
        return self._version
