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

``action_history=K`` (the delay-aware observation, ``--action-history K``): ``info["action_history"]`` is
int64 ``(K + 1,)``: the agent's last K actions of the episode (oldest first, -1 before the episode start),
then the pending slot, always -1 here (every action is applied at the step it is chosen). With ``K >=
delay`` it holds every action whose effect the returned observation does not show yet; the replay buffer
gathers the same from the stored steps (:meth:`rtcore.ReplayBuffer.sample`, ``learn_on="applied"``).

``convention="authors"`` reproduces the authors' delay simulation (CERC-AAI/realtime_rl,
``simulate_delay_atari.py`` / ``simulate_delay_tetris.py`` with ``--delay d [--noops d]``): the agent
acts on the observation ``d - 1`` agent steps old (the newest one for ``d <= 1``), with all-zero
observations standing in for the steps before the episode start (``obs_frame`` < 0 for those). Their
sequential baseline is ``--delay d --noops d``: each agent step applies the action and then ``d``
default actions and returns the last frame, so the observation acted on is ``(d - 1) * (d + 1)``
frames old, plus the ``d`` default actions per action. (Their env keeps stepping the no-ops after the
episode ended; here the no-ops stop at the end of the episode, as with the default convention.)
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

#: Delay in frames for each model size of the paper (DESIGN.md, "Reference numbers").
PAPER_DELAYS = {"55K": 1, "1M": 5, "10M": 8, "100M": 70, "1B": 596}


CONVENTIONS = ("rtcore", "authors")


class DelayWrapper(gym.Wrapper):
    """Observations ``delay`` frames old; with ``sequential``, ``delay`` default actions after each action.

    ``convention``: ``"rtcore"`` (default: ``delay`` frames old, the first frame repeated before the
    episode start) or ``"authors"`` (the authors' code: ``delay - 1`` agent steps old, zero
    observations before the episode start; see the module docstring).
    """

    def __init__(self, env: gym.Env, delay: int, sequential: bool = False, convention: str = "rtcore",
                 action_history: int = 0) -> None:
        super().__init__(env)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be an int >= 0 (frames), got {delay!r}")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if isinstance(action_history, bool) or not isinstance(action_history, int) or not 0 <= action_history <= 1024:
            raise ValueError(f"action_history must be an int in [0, 1024] (agent actions reported in info), "
                             f"got {action_history!r}")
        self.action_history = action_history
        self._history = np.full(action_history + 1, -1, np.int64)  # the last K actions, then pending (none)
        default = getattr(env.unwrapped, "default_action", getattr(env, "default_action", None))
        if default is None and sequential:
            raise ValueError("sequential=True needs an env with a default_action")
        self.delay = delay
        self.sequential = bool(sequential)
        self.convention = convention
        self.default_action = default
        self.frame_time = getattr(env.unwrapped, "frame_time", getattr(env, "frame_time", None))
        # rtcore: the newest delay + 1 frames; authors: the newest max(delay, 1) agent-step observations
        self._age = delay if convention == "rtcore" else max(delay - 1, 0)
        self._frames: deque = deque(maxlen=self._age + 1)
        self._frame_ids: deque = deque(maxlen=self._age + 1)  # env frame index of each stored observation
        self._frame = 0  # env frames since reset

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        self._frame_ids.clear()
        self._frame = 0
        if self.convention == "rtcore":
            self._frames.extend([obs] * (self.delay + 1))
            self._frame_ids.extend([0] * (self.delay + 1))
        else:
            per_step = self.delay + 1 if self.sequential else 1  # env frames per agent step
            self._frames.extend([np.zeros_like(obs)] * self._age + [obs])
            self._frame_ids.extend([-per_step * k for k in range(self._age, 0, -1)] + [0])
        info = {**info, "frames": 0, "obs_frame": self._frame_ids[0]}
        if self.action_history:
            self._history[:] = -1
            info["action_history"] = self._history.copy()
        return self._frames[0], info

    def _advance(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frame += 1
        if self.convention == "rtcore":
            self._frames.append(obs)
            self._frame_ids.append(self._frame)
        else:
            self._last = obs  # the authors keep one observation per agent step: the last frame of it
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
        if self.convention == "authors":
            self._frames.append(self._last)
            self._frame_ids.append(self._frame)
        info = {**info, "frames": frames, "obs_frame": self._frame_ids[0]}
        k = self.action_history
        if k:
            self._history[:k - 1] = self._history[1:k]
            self._history[k - 1] = int(action)
            info["action_history"] = self._history.copy()
        return self._frames[0], total, terminated, truncated, info
