"""Any Gymnasium env as an rtcore env: one observation convention, a default action and a frame time.

rtcore's driver, boards, replay buffer, workers and learners take the observation spec (shape and
dtype of ONE frame; stacking is theirs) from the env. :func:`observation_spec` is the one place that
decides how an env's observations are normalized:

* image frames (2 or 3 dimensions) are ``uint8`` pixels on a 0..255 scale, channel-first:
  ``H x W`` (greyscale) stays as is; a 3-D frame is ``C x H x W`` when its first dimension is the
  smallest, else ``H x W x C`` and transposed to ``C x H x W`` (an env can say which with an
  ``obs_layout`` attribute, ``"chw"`` or ``"hwc"``);
* ``bool`` frames (MinAtar's channels) become ``uint8`` 0/255, so every image model's ``1/255``
  input scaling gives 0/1;
* flat vectors (1 dimension) become ``float32`` and are fed to the models unscaled.

:class:`RealtimeEnv` applies that to any env whose action space is ``Discrete`` and gives it the two
attributes a realtime env needs: ``default_action`` (what the driver applies when no action is
ready) and ``frame_time`` (native seconds per step, or None when the env has no native rate: then the
run needs ``--frequency``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ObservationSpec", "observation_spec", "RealtimeEnv", "env_attribute"]

_MISSING = object()


class ObservationSpec:
    """How one frame of an env is stored: ``shape``, ``dtype``, and the transform from the env's own frame."""

    def __init__(self, source_shape: tuple[int, ...], source_dtype: np.dtype, layout: str | None = None) -> None:
        shape = tuple(int(d) for d in source_shape)
        dtype = np.dtype(source_dtype)
        if not shape or len(shape) > 3 or any(d < 1 for d in shape):
            raise ValueError(f"observations of shape {shape} are not supported: expected a flat vector (D,), "
                             f"a greyscale frame (H, W) or a frame with channels (C, H, W) / (H, W, C)")
        if dtype.kind not in "biuf":
            raise ValueError(f"observations of dtype {dtype} are not supported: expected bool, integer or float")
        self.source_shape, self.source_dtype = shape, dtype
        self.transpose = False
        if len(shape) == 1:
            self.kind = "vector"
            self.shape, self.dtype = shape, np.dtype(np.float32)
            self.scale = 1
        else:
            self.kind = "image"
            if len(shape) == 3:
                if layout is None:
                    layout = "chw" if shape[0] <= min(shape[1], shape[2]) else "hwc"
                if layout not in ("chw", "hwc"):
                    raise ValueError(f"obs_layout must be 'chw' or 'hwc', got {layout!r}")
                self.transpose = layout == "hwc"
                if self.transpose:
                    shape = (shape[2], shape[0], shape[1])
            self.shape, self.dtype = shape, np.dtype(np.uint8)
            self.scale = 255 if dtype.kind == "b" else 1
            if dtype.kind == "f":
                raise ValueError(f"float image frames of shape {source_shape} are not supported: expected uint8 "
                                 f"pixels (0..255) or bool channels; flatten them to a vector, or convert to uint8")

    @property
    def identity(self) -> bool:
        """The env's frames are stored as they come (no copy needed)."""
        return not self.transpose and self.scale == 1 and self.source_dtype == self.dtype

    def __call__(self, obs: Any) -> np.ndarray:
        a = np.asarray(obs)
        if a.shape != self.source_shape:
            raise ValueError(f"the env returned an observation of shape {a.shape}, its observation_space says "
                             f"{self.source_shape}")
        if self.transpose:
            a = a.transpose(2, 0, 1)
        if self.scale != 1:
            return np.ascontiguousarray(a, dtype=np.uint8) * np.uint8(self.scale)
        return np.ascontiguousarray(a, dtype=self.dtype)

    def __repr__(self) -> str:
        return (f"ObservationSpec({self.kind}: {self.source_shape} {self.source_dtype} -> {self.shape} "
                f"{self.dtype}{', transposed' if self.transpose else ''})")


def env_attribute(env: Any, name: str, default: Any = None) -> Any:
    """``name`` on the env or any wrapper inside it (Gymnasium wrappers hide their env's attributes)."""
    e = env
    for _ in range(64):
        value = getattr(e, name, _MISSING)
        if value is not _MISSING:
            return value
        inner = getattr(e, "env", None)
        if inner is None or inner is e:
            break
        e = inner
    return default


def observation_spec(env: Any) -> ObservationSpec:
    """The :class:`ObservationSpec` of ``env`` (see the module docstring)."""
    space = getattr(env, "observation_space", None)
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{env!r} has observation space {space!r}: rtcore needs a Box (image frames or a flat "
                         f"vector)")
    return ObservationSpec(tuple(space.shape), np.dtype(space.dtype), env_attribute(env, "obs_layout"))


class RealtimeEnv(gym.Wrapper):
    """``env`` with rtcore's observation convention, ``default_action`` and ``frame_time``.

    Args:
        env: a Gymnasium env with a ``Discrete`` action space and a ``Box`` observation space.
        default_action: the action applied when no fresh one is ready. When None, the env's own
            ``default_action`` attribute; when it has none either, a ``ValueError`` that says so.
        frame_time: native seconds per step. When None, the env's ``frame_time`` attribute, else None
            (then ``rtcore run`` needs ``--frequency``).
        name: how errors name the env (its id).
    """

    def __init__(self, env: gym.Env, default_action: int | None = None, frame_time: float | None = None,
                 name: str | None = None) -> None:
        super().__init__(env)
        self.name = name or repr(env)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"env {self.name} has action space {env.action_space!r}: rtcore needs Discrete actions")
        n = int(env.action_space.n)
        own = env_attribute(env, "default_action")
        if default_action is None:
            default_action = own
        if default_action is None:
            raise ValueError(f"env {self.name} has no default_action attribute (the action applied when no fresh "
                             f"action is ready, e.g. a no-op): pass default_action=N to rtcore.make, or "
                             f"--default-action N to rtcore run")
        if isinstance(default_action, bool) or not isinstance(default_action, (int, np.integer)) \
                or not 0 <= int(default_action) < n:
            raise ValueError(f"default_action = {default_action!r} for env {self.name}: expected an action in "
                             f"[0, {n}) of its Discrete({n}) action space")
        self.default_action = int(default_action)
        if frame_time is None:
            frame_time = env_attribute(env, "frame_time")
        if frame_time is not None and not (float(frame_time) > 0 and np.isfinite(float(frame_time))):
            raise ValueError(f"frame_time = {frame_time!r} for env {self.name}: expected positive seconds per step")
        self.frame_time = None if frame_time is None else float(frame_time)
        self.obs_spec = observation_spec(env)
        low, high = (0, 255) if self.obs_spec.kind == "image" else (-np.inf, np.inf)
        self.observation_space = gym.spaces.Box(low, high, self.obs_spec.shape, self.obs_spec.dtype)

    @property
    def emulator_time(self) -> float | None:
        """The wrapped env's own step time when it reports one (the driver times the step otherwise)."""
        return getattr(self.env, "emulator_time", None)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self.obs_spec(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.obs_spec(obs), float(reward), bool(terminated), bool(truncated), info

    def __repr__(self) -> str:
        return f"RealtimeEnv({self.name}, obs {self.obs_spec.shape} {self.obs_spec.dtype})"
