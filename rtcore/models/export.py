"""What inference workers run: TorchScript (default), torch.export, or eager, on CPU or CUDA.

Backends (``backend=`` everywhere below):

- ``"script"``: ``torch.jit.script``. The default for workers. Its parameters are ordinary tensors, so
  :func:`rtcore.shared.params.bind_flat` can point them at shared memory and a worker picks up each
  new version of the parameters with no copy (CPU) or one host-to-device copy (CUDA).
- ``"export"``: ``torch.export`` (an ``ExportedProgram``; workers run its ``.module()``). Same
  parameter binding as above. Batch size is a dynamic dimension.
- ``"eager"``: the plain ``nn.Module``; the fallback when neither compiler handles a model.

``frozen=True`` (script only) folds the parameters into the graph as constants
(``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``): faster on CPU, but the module has no
parameters left to bind, so by itself it is for evaluating a fixed checkpoint. Workers that learn while
playing run it through :mod:`rtcore.models.frozen` (``--backend frozen``), which refreshes the frozen
graph's constants in place for each new version.

Files: :func:`save_model` writes a checkpoint (spec + state dict) that any backend can load;
``torch.jit.save`` archives load with ``backend="script"`` and ``torch.export.save`` archives (``.pt2``)
with ``backend="export"``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rtcore.models import ModelSpec, build_model, example_history, example_input

__all__ = [
    "BACKENDS",
    "script_model",
    "export_model",
    "save_model",
    "load_checkpoint",
    "load_for_inference",
    "measure_latency",
]

BACKENDS = ("script", "export", "eager")
_CHECKPOINT_FORMAT = "rtcore-model/1"


@contextlib.contextmanager
def _quiet_jit():
    """torch >= 2.9 marks torch.jit deprecated; rtcore chose TorchScript deliberately (see the module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit.*` is deprecated", category=DeprecationWarning)
        yield


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """TorchScript of ``model`` (returned as is if it is scripted already). Keeps its parameters' tensors."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    with _quiet_jit():
        return torch.jit.script(model)


def export_model(model: nn.Module, example: torch.Tensor | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` with a dynamic batch dimension.

    ``example`` is a batch of frames on the model's device (default: two seeded frames of the model's shape).
    """
    if example is None:
        device = next(model.parameters()).device
        example = example_input(model, batch=2, device=device)
    if example.dim() < 3:
        raise ValueError(f"example has shape {tuple(example.shape)}, expected (batch, frames, *obs_shape)")
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        if getattr(model, "action_history", 0):  # forward(obs, hist): the history batch is dynamic too
            hist = example_history(model, batch=example.shape[0], device=example.device)
            return torch.export.export(model, (example, hist), dynamic_shapes=({0: batch}, {0: batch}))
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def save_model(model: nn.Module, path: str | os.PathLike[str], format: str = "checkpoint") -> None:
    """Writes ``model`` to ``path`` for :func:`load_for_inference`.

    ``format``: ``"checkpoint"`` (spec, shapes and state dict; loads with any backend), ``"script"``
    (a ``torch.jit.save`` archive) or ``"export"`` (a ``torch.export.save`` archive; use a ``.pt2`` name).
    """
    if format == "script":
        with _quiet_jit():
            torch.jit.save(script_model(model), str(path))
        return
    if format == "export":
        torch.export.save(export_model(model), str(path))
        return
    if format != "checkpoint":
        raise ValueError(f"format must be 'checkpoint', 'script' or 'export', got {format!r}")
    for attr in ("spec", "in_frames", "n_actions", "frame_size"):
        if not hasattr(model, attr):
            raise ValueError(f"model has no {attr!r} attribute; save models made by rtcore.models.build_model")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": _CHECKPOINT_FORMAT, "spec": str(model.spec), "in_frames": int(model.in_frames),
                "n_actions": int(model.n_actions), "frame_size": tuple(model.frame_size),
                "obs_shape": tuple(getattr(model, "obs_shape", model.frame_size)),
                "action_history": int(getattr(model, "action_history", 0)), "state_dict": state}, path)


def load_checkpoint(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuilds the eager model from a :func:`save_model` checkpoint (on the CPU)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an rtcore model checkpoint (expected format {_CHECKPOINT_FORMAT!r})")
    model = build_model(ckpt["spec"], ckpt["in_frames"], ckpt["n_actions"], frame_size=tuple(ckpt["frame_size"]),
                        obs_shape=tuple(ckpt.get("obs_shape", ckpt["frame_size"])),
                        action_history=int(ckpt.get("action_history", 0)))
    model.load_state_dict(ckpt["state_dict"])
    return model


def _archive_kind(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a model file (expected an rtcore checkpoint, a TorchScript archive "
                         f"or a torch.export .pt2 archive)") from None
    if any("/code/" in n for n in names):
        return "script"
    if any(n.endswith("archive_format") or "/models/" in n for n in names) or path.suffix == ".pt2":
        return "export"
    return "checkpoint"


def load_for_inference(model: nn.Module | str | os.PathLike[str], device: str | torch.device = "cpu",
                       backend: str = "script", frozen: bool = False) -> nn.Module:
    """The module an inference worker runs: ``model`` compiled by ``backend``, on ``device``, in eval mode.

    ``model`` is an ``nn.Module`` (from :func:`rtcore.models.build_model`), a :func:`save_model`
    checkpoint, a ``torch.jit.save`` archive (script backend) or a ``torch.export.save`` archive
    (export backend). The result's parameters are plain tensors on ``device``: bind them to shared
    memory with :func:`rtcore.shared.params.bind_flat` (CPU) or refresh them with
    :class:`rtcore.shared.params.ParamReader`. ``frozen=True`` needs the script backend and gives a module
    with no parameters left to refresh.

    A module passed in is copied first: the caller's module is never moved, compiled or re-bound.
    Callers set ``torch.set_num_threads`` themselves (workers use 1 thread each).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if frozen and backend != "script":
        raise ValueError(f"frozen=True needs backend='script' (got backend={backend!r})")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        kind = _archive_kind(path)
        if kind == "script":
            if backend != "script":
                raise ValueError(f"{path} is a TorchScript archive; load it with backend='script', not {backend!r}")
            with _quiet_jit():
                module: nn.Module = torch.jit.load(str(path), map_location=device)
        elif kind == "export":
            if backend != "export":
                raise ValueError(f"{path} is a torch.export archive; load it with backend='export', not {backend!r}")
            module = torch.export.load(str(path)).module()
            module.to(device)
            return module
        else:
            module = load_checkpoint(path)
    elif isinstance(model, nn.Module):
        module = copy.deepcopy(model)  # never move or re-bind the caller's module
    else:
        raise TypeError(f"model must be an nn.Module or a path, got {type(model).__name__}")

    if isinstance(module, torch.jit.ScriptModule) and backend != "script":
        raise ValueError(f"a TorchScript module can only run with backend='script', not {backend!r}")
    module = module.to(device).eval()
    if backend == "script":
        module = script_model(module)
        if frozen:
            with _quiet_jit():
                module = torch.jit.optimize_for_inference(torch.jit.freeze(module.eval()))
    elif backend == "export":
        k = int(getattr(module, "action_history", 0))
        module = export_model(module, example_input(module, batch=2, device=device)).module()
        if k:
            module.action_history = k  # the exported module keeps no attributes of its own
    return module


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of an ascending list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure_latency(model_spec: str | ModelSpec | nn.Module, device: str | torch.device = "cpu", batch: int = 1,
                    iters: int = 100, warmup: int = 10, *, backend: str = "script", frozen: bool = False,
                    in_frames: int = 1, n_actions: int = 6, threads: int | None = 1,
                    seed: int = 0) -> dict[str, Any]:
    """Times one action the way an inference worker computes it, ``iters`` times after ``warmup`` runs.

    One timed step is: uint8 frames from host memory to ``device`` -> forward pass -> argmax -> action
    back on the host (so CUDA timings include both transfers and the synchronisation). ``threads``
    sets ``torch.set_num_threads`` for the measurement (workers use 1) and is restored after;
    ``None`` leaves it alone.

    Returns seconds: ``p50``, ``p99``, ``mean``, ``min``, ``max``; and ``params``, ``spec``, ``device``,
    ``backend``, ``frozen``, ``batch``, ``iters``, ``threads``. The runner takes ``p99`` as tau_theta_max.
    """
    if iters < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need iters >= 1, warmup >= 0, batch >= 1; got iters={iters}, warmup={warmup}, batch={batch}")
    if isinstance(model_spec, nn.Module):
        eager = model_spec
    else:
        torch.manual_seed(seed)
        eager = build_model(model_spec, in_frames, n_actions)
    params = sum(p.numel() for p in eager.parameters())
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        module = load_for_inference(eager, dev, backend=backend, frozen=frozen)
        frames = example_input(eager, batch=batch, seed=seed)
        hist = example_history(eager, batch=batch, seed=seed) if getattr(eager, "action_history", 0) else None
        if dev.type == "cuda":
            frames = frames.pin_memory()
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        times: list[float] = []
        with torch.inference_mode():
            for i in range(warmup + iters):
                t0 = time.perf_counter()
                x = frames.to(dev, non_blocking=True)
                q = module(x) if hist is None else module(x, hist.to(dev, non_blocking=True))
                action = q.argmax(dim=1).cpu()
                sync()
                t1 = time.perf_counter()
                if i >= warmup:
                    times.append(t1 - t0)
        del action
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    s = sorted(times)
    return {
        "spec": str(getattr(eager, "spec", type(eager).__name__)),
        "params": params,
        "device": str(device),
        "backend": backend,
        "frozen": frozen,
        "batch": batch,
        "iters": iters,
        "threads": threads,
        "p50": _percentile(s, 50),
        "p99": _percentile(s, 99),
        "mean": statistics.fmean(s),
        "min": s[0],
        "max": s[-1],
    }
