"""A run's whole learner state on disk, to resume a run or play its policy.

``checkpoints/<tag>.state.pt`` (``torch.save`` of plain tensors and numbers, written atomically) holds

- what it belongs to (:class:`Identity`: env id, model spec, observation shape and dtype, number of
  actions, frame stack, parameter count): a checkpoint of another model or env is refused;
- the online parameters (the newest published version), the target network, Adam's two moments and
  its step count, the updates applied and the target version;
- the env step the run had reached (epsilon and the step indices continue from it) and the wall-clock
  seconds already run;
- the runner's RNG states, and how many times the run was resumed: the children's generators are
  reseeded from ``(seed, resumes)``, so a resumed run does not replay the exploration it already made.

The replay buffer is not saved (like most DQN checkpoints): a resumed run refills it, and learning
waits ``learning_starts`` transitions again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckpointMismatch", "Identity", "LearnerState", "check_resumable", "find_state", "load_state", "save_state",
           "write_checkpoint"]

STATE_FORMAT = "rtcore-learner-state-1"
STATE_SUFFIX = ".state.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint of another model or env than the one it is loaded into."""


@dataclass(frozen=True)
class Identity:
    """What a learner state belongs to; two states load into each other only if all fields agree."""

    env: str
    model: str
    obs_shape: tuple[int, ...]
    obs_dtype: str
    n_actions: int
    frame_stack: int
    numel: int
    action_history: int = 0  # (a state saved before action histories existed has none)

    def check(self, other: "Identity", source: str) -> None:
        """Raises :class:`CheckpointMismatch` naming every field in which ``other`` (from ``source``) differs."""
        diffs = [f"{k}: checkpoint has {getattr(other, k)!r}, this run {v!r}"
                 for k, v in asdict(self).items() if getattr(other, k) != v]
        if diffs:
            raise CheckpointMismatch(f"{source} belongs to another model or env ({'; '.join(diffs)})")


@dataclass
class LearnerState:
    """Everything a learner group needs to continue (arrays are float32, ``params``/``target`` flat)."""

    identity: Identity
    params: np.ndarray
    target: np.ndarray
    moments: np.ndarray      # (2, numel): Adam's first and second moment
    opt_step: int
    updates: int
    target_version: int
    param_version: int
    env_steps: int           # the next env step index (epsilon continues from it)
    seconds: float           # wall-clock seconds run so far, over all resumes
    resumes: int
    rng: dict[str, Any]      # the runner's torch and numpy generator states


def check_resumable(cfg: Any) -> None:
    """Refuses ``cfg.resume`` before anything starts when its newest checkpoint is of another env, model,
    frame stack or action history than ``cfg`` (the parameter count and observation shape are checked once the model is
    built)."""
    path = find_state(cfg.resume)
    ident = load_state(path).identity
    diffs = [f"{k}: checkpoint has {getattr(ident, k)!r}, this run {getattr(cfg, k)!r}"
             for k in ("env", "model", "frame_stack", "action_history") if getattr(ident, k) != getattr(cfg, k)]
    if diffs:
        raise CheckpointMismatch(f"{path} belongs to another model or env ({'; '.join(diffs)})")


def save_state(path: str | os.PathLike[str], state: LearnerState) -> Path:
    """Writes ``state`` to ``path`` atomically (a reader never sees half a file)."""
    import torch

    path = Path(path)
    n = state.identity.numel
    for name, arr, shape in (("params", state.params, (n,)), ("target", state.target, (n,)),
                             ("moments", state.moments, (2, n))):
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    payload = {
        "format": STATE_FORMAT,
        "identity": {**asdict(state.identity), "obs_shape": list(state.identity.obs_shape)},
        "params": torch.from_numpy(np.ascontiguousarray(state.params, np.float32)),
        "target": torch.from_numpy(np.ascontiguousarray(state.target, np.float32)),
        "moments": torch.from_numpy(np.ascontiguousarray(state.moments, np.float32)),
        "counters": {k: int(getattr(state, k)) for k in ("opt_step", "updates", "target_version", "param_version",
                                                          "env_steps", "resumes")},
        "seconds": float(state.seconds),
        "rng": state.rng,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike[str]) -> LearnerState:
    """Reads a state written by :func:`save_state` (``ValueError`` if the file is something else)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no learner state at {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which file, not pickle's internals
        raise ValueError(f"{path} is not a readable rtcore learner state ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not an rtcore learner state (expected format {STATE_FORMAT!r})")
    ident = dict(d["identity"])
    ident["obs_shape"] = tuple(int(x) for x in ident["obs_shape"])
    c = d["counters"]
    return LearnerState(identity=Identity(**ident), params=d["params"].numpy(), target=d["target"].numpy(),
                        moments=d["moments"].numpy(), opt_step=c["opt_step"], updates=c["updates"],
                        target_version=c["target_version"], param_version=c["param_version"],
                        env_steps=c["env_steps"], seconds=float(d["seconds"]), resumes=c["resumes"], rng=d["rng"])


def find_state(where: str | os.PathLike[str]) -> Path:
    """The learner state a path names: a ``*.state.pt`` file, a model checkpoint ``<tag>.pt`` beside its
    state, or a run directory (its ``final`` state, else its ``latest``)."""
    p = Path(where)
    if p.is_dir():
        for tag in ("final", "latest"):
            cand = p / "checkpoints" / f"{tag}{STATE_SUFFIX}"
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"{p} holds no checkpoint (looked for checkpoints/final{STATE_SUFFIX} and "
                                f"checkpoints/latest{STATE_SUFFIX}); is it an rtcore run directory?")
    if p.name.endswith(STATE_SUFFIX) and p.is_file():
        return p
    if p.suffix == ".pt" and p.is_file():
        cand = p.with_name(p.stem + STATE_SUFFIX)
        if cand.is_file():
            return cand
        raise FileNotFoundError(f"{p} has no learner state beside it ({cand.name})")
    raise FileNotFoundError(f"{p} is neither a run directory nor a checkpoint file")


def rng_state() -> dict[str, Any]:
    """The calling process's torch and numpy global generator states."""
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])


def write_checkpoint(r: Any, tag: str, final: bool = False) -> Path:
    """A run's checkpoint ``tag`` from its runner ``r``: the newest parameters as a model checkpoint
    (``<tag>.pt``, loads with rtcore.models.export), ``<tag>.json``, and the learner state (from
    ``r.learner_arrays(final)``: ``final`` once every learner has stopped)."""
    import torch

    from rtcore.agent.telemetry import Control
    from rtcore.models.export import save_model
    from rtcore.shared.params import bind_flat

    ckpt_dir = r.run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    flat = bind_flat(r.model)
    version, params, target, moments, opt_step = r.learner_arrays(final)
    flat.copy_(torch.from_numpy(params))
    path = ckpt_dir / f"{tag}.pt"
    tmp = path.with_suffix(".tmp")
    save_model(r.model, tmp, format="checkpoint")
    os.replace(tmp, path)
    c = r.telemetry.control
    (ckpt_dir / f"{tag}.json").write_text(json.dumps({"param_version": int(version),
                                                      "learner_updates": int(c[Control.UPDATES])}))
    # the learner state: exact at the end (every child has stopped); a live snapshot in between
    # (the parameters are one whole version; the moments are those of the opt_step saved with them)
    elapsed = (getattr(r, "t_stop", None) or time.monotonic()) - getattr(r, "t_env0", time.monotonic())
    resumes = 0 if r.start is None or r.params_only else r.start.resumes + 1
    save_state(ckpt_dir / f"{tag}{STATE_SUFFIX}", LearnerState(
        identity=r.identity, params=flat.detach().numpy(), target=target,
        moments=moments, opt_step=int(opt_step), updates=int(c[Control.UPDATES]),
        target_version=int(c[Control.TARGET_VERSION]), param_version=int(version),
        env_steps=max(r.step_offset, int(r.obs_board.step) + 1), seconds=r.time_offset + max(0.0, elapsed),
        resumes=resumes, rng=rng_state()))
    return path
