"""A user's own game for the tests of ``rtcore.make("custom_env:make")``: what a user brings.

Channel-last colour frames of an odd size (12 x 16 x 3), no ``default_action`` and no ``frame_time``
attribute (the run gives ``--default-action`` and ``--frequency``). The reward is 1 when the action
matches the colour channel lit in the frame, so a learner has something to learn.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ColourGame(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, height: int = 12, width: int = 16, length: int = 20) -> None:
        self.h, self.w, self.length = height, width, length
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)
        self._t = 0
        self._c = 0

    def _obs(self) -> np.ndarray:
        frame = np.zeros((self.h, self.w, 3), np.uint8)
        frame[..., self._c] = 200
        return frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._c = int(self.np_random.integers(3))
        return self._obs(), {}

    def step(self, action: Any):
        reward = 1.0 if int(action) == self._c else 0.0
        self._t += 1
        self._c = int(self.np_random.integers(3))
        return self._obs(), reward, False, self._t >= self.length, {}


def make(**kwargs: Any) -> gym.Env:
    return ColourGame(**kwargs)


def not_an_env() -> int:
    return 3
