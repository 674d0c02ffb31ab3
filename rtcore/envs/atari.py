"""Realtime Atari through the Arcade Learning Environment (ale-py; the ROMs ship with it).

:class:`AtariEnv` runs any ``ALE/<Game>-v5`` game at the ALE's 60 frames/s with, by default, no frame
skip and no sticky actions (the paper's realtime setting: one env step is one frame of wall clock), and
returns rtcore's observation: the ALE's grayscale screen area-resized to 84x84 uint8, one frame (no
stacking). The default action is NOOP (action 0 of every ALE action set).
"""

from __future__ import annotations

import difflib
from time import perf_counter
from typing import Any

import gymnasium as gym
import numpy as np

from rtcore.envs.base import check_discrete_action
from rtcore.envs.preprocess import OBS_SIZE, Preprocessor

#: The ALE steps the console at 60 frames per second.
ALE_FPS = 60.0


def _ale_specs() -> dict[str, Any]:
    import ale_py

    gym.register_envs(ale_py)
    return {k: v for k, v in gym.registry.items() if k.startswith("ALE/")}


def resolve_ale_id(env_id: str) -> dict[str, Any]:
    """The ale-py constructor arguments of ``env_id`` (``ALE/<Game>-v5``), or a clear ValueError."""
    specs = _ale_specs()
    spec = specs.get(env_id)
    if spec is None:
        close = difflib.get_close_matches(env_id, list(specs), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. ALE/Pong-v5, ALE/Boxing-v5)"
        raise ValueError(f"unknown Atari env id {env_id!r}: expected one of the ale-py ids ALE/<Game>-v5{hint}")
    if "game" not in spec.kwargs:
        raise ValueError(f"env id {env_id!r} is not an ale-py game")
    return dict(spec.kwargs)


class AtariEnv(gym.Env):
    """One ALE game, one frame per step, 84x84 grayscale uint8 observations.

    Args:
        env_id: an ale-py id such as ``"ALE/Pong-v5"``.
        frame_skip: frames the action is repeated for per step (1: realtime, the default).
        repeat_action_probability: sticky-action probability (0: off, the default; ALE v5 uses 0.25).
        full_action_space: use all 18 actions instead of the game's minimal set.
        mode, difficulty: ALE game mode and difficulty (None: the game's default).
        max_num_frames_per_episode: truncate an episode after this many frames (ALE's 108000 = 30 min).
        obs_size: the side of the square observation.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env_id: str = "ALE/Pong-v5",
        *,
        frame_skip: int = 1,
        repeat_action_probability: float = 0.0,
        full_action_space: bool = False,
        mode: int | None = None,
        difficulty: int | None = None,
        max_num_frames_per_episode: int = 108_000,
        obs_size: int = OBS_SIZE,
    ) -> None:
        kwargs = resolve_ale_id(env_id)
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        if not 0.0 <= float(repeat_action_probability) <= 1.0:
            raise ValueError(f"repeat_action_probability must be in [0, 1], got {repeat_action_probability!r}")
        from ale_py.env import AtariEnv as _AleEnv

        kwargs.update(
            obs_type="grayscale",
            frameskip=int(frame_skip),
            repeat_action_probability=float(repeat_action_probability),
            full_action_space=bool(full_action_space),
            max_num_frames_per_episode=int(max_num_frames_per_episode),
        )
        if mode is not None:
            kwargs["mode"] = mode
        if difficulty is not None:
            kwargs["difficulty"] = difficulty
        self._env = _AleEnv(**kwargs)
        self._ale = self._env.ale
        self._action_set = [a for a in self._env._action_set]
        self._n = len(self._action_set)
        self.env_id = env_id
        self.frame_skip = int(frame_skip)
        self.frame_time = self.frame_skip / ALE_FPS
        self.default_action = 0  # NOOP is action 0 of the minimal and the full action set
        self.action_space = gym.spaces.Discrete(self._n)
        self.observation_space = gym.spaces.Box(0, 255, (obs_size, obs_size), np.uint8)
        h, w = self._ale.getScreenDims()
        self._screen = np.empty((h, w), np.uint8)
        self._prep = Preprocessor((h, w), (obs_size, obs_size))
        self._obs = np.empty((obs_size, obs_size), np.uint8)
        self.action_meanings = self._env.get_action_meanings()
        #: Seconds the last step spent inside the emulator (the driver counts the rest as its own cost).
        self.emulator_time = 0.0

    def _observe(self) -> np.ndarray:
        self._ale.getScreenGrayscale(self._screen)
        out = np.empty(self._obs.shape, np.uint8)
        self._prep(self._screen, out)
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._env.reset(seed=seed, options=options)
        return self._observe(), {"lives": self._ale.lives()}

    def step(self, action: Any):
        a = check_discrete_action(action, self._n, self.env_id)
        ale_action = self._action_set[a]
        reward = 0.0
        t0 = perf_counter()
        for _ in range(self.frame_skip):
            reward += self._ale.act(ale_action)
        self.emulator_time = perf_counter() - t0
        terminated = self._ale.game_over(with_truncation=False)
        truncated = self._ale.game_truncated()
        return self._observe(), reward, terminated, truncated, {"lives": self._ale.lives()}

    def emulator_step(self, action: int) -> float:
        """One raw emulator step without observation (the benchmark's "raw emulator" peer)."""
        reward = 0.0
        for _ in range(self.frame_skip):
            reward += self._ale.act(self._action_set[action])
        return reward

    def close(self) -> None:
        self._env.close()

    def __repr__(self) -> str:
        return f"AtariEnv({self.env_id!r}, frame_skip={self.frame_skip})"

