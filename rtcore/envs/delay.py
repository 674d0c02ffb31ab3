"""Delay simulation: the paper's Tetris/Atari experiments on small hardware, deterministically.

The env is paused while the agent thinks, and the effect of thinking time is reproduced in env frames:

* ``delay=d`` (asynchronous, staggered inference): the agent acts on the observation from ``d`` frames
  earlier. Each ``step(a)`` applies ``a`` for one frame and returns the frame observed ``d`` env steps
  before the newest one, so an action computed from ``step``'s output at time t is applied at t + d,
  exactly the delay staggered inference gives a model that takes d frames.
* ``sequential=True`` (inference blocking the env): additionally, after every agent action the env runs
  ``d`` frames of the default action (the frames that pass while the next action is computed); the
  rewards of those frames are added to the step's reward.

The paper's delays per model size: 55K params -> 1 frame, 1M -> 5, 10M -> 8, 100M -> 70, 1B -> 596.
At the start of an episode the agent sees the first frame until ``d`` frames have passed. ``info``
carries ``frames`` (env frames this step) and ``obs_frame`` (the env frame index of the returned
observation; the reset frame is 0).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym

#: Delay in frames for each model size of the paper (DESIGN.md, "Reference numbers").
PAPER_DELAYS = {"55K": 1, "1M": 5, "10M": 8, "100M": 70, "1B": 596}


class DelayWrapper(gym.Wrapper):
    """Observations ``delay`` frames old; with ``sequential``, ``delay`` default actions after each action."""

    def __init__(self, env: gym.Env, delay: int, sequential: bool = False) -> None:
        super().__init__(env)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be an int >= 0 (frames), got {delay!r}")
        default = getattr(env.unwrapped, "default_action", getattr(env, "default_action", None))
        if default is None and sequential:
            raise ValueError("sequential=True needs an env with a default_action")
        self.delay = delay
        self.sequential = bool(sequential)
        self.default_action = default
        self.frame_time = getattr(env.unwrapped, "frame_time", getattr(env, "frame_time", None))
        self._frames: deque = deque(maxlen=delay + 1)  # the newest delay + 1 observations
        self._frame = 0  # env frames since reset

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        self._frames.extend([obs] * (self.delay + 1))
        self._frame = 0
        return obs, {**info, "frames": 0, "obs_frame": 0}

    def _advance(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        self._frame += 1
        return reward, terminated, truncated, info

    def step(self, action: Any):
        total, terminated, truncated, info = self._advance(action)
        frames = 1
        if self.sequential:
            for _ in range(self.delay):
                if terminated or truncated:
                    break
                reward, terminated, truncated, info = self._advance(self.default_action)
                total += reward
                frames += 1
        info = {**info, "frames": frames, "obs_frame": max(0, self._frame - self.delay)}
        return self._frames[0], total, terminated, truncated, info
