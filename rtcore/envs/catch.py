"""Catch: a tiny built-in game for tests and demos (``rtcore.make("rtcore/Catch")``).

A ball falls one row per step down a ``size x size`` board (10 x 10 by default) from a random column
of the top row; a ``paddle``-wide paddle (3) moves along the bottom row. Actions: 0 left, 1 stay,
2 right (``default_action`` is 1, stay). When the ball reaches the bottom row the step's reward is +1
if the paddle is under it, else -1, and the next ball starts at the top. An episode is ``balls``
balls (5), so returns lie in [-5, 5]; a uniformly random policy scores about -2.0 (measured over 2000 episodes), a perfect one 5.

Observations are one ``size x size`` uint8 greyscale frame: the ball 255, the paddle 128, the rest 0.
The native rate is 400 steps per second (``frame_time`` 2.5 ms): the game is cheap enough (a few
microseconds per step) that a run's several hundred steps per second go to acting and learning.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["CatchEnv"]

BALL, PADDLE = 255, 128


class CatchEnv(gym.Env):
    """The Catch game (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 10, paddle: int = 3, balls: int = 5, frame_time: float = 1 / 400) -> None:
        for name, value, lo in (("size", size, 3), ("paddle", paddle, 1), ("balls", balls, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if paddle > size:
            raise ValueError(f"paddle ({paddle}) must be at most the board size ({size})")
        if not (frame_time > 0 and np.isfinite(frame_time)):
            raise ValueError(f"frame_time must be positive seconds, got {frame_time!r}")
        self.size, self.paddle, self.balls = int(size), int(paddle), int(balls)
        self.frame_time = float(frame_time)
        self.default_action = 1
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size), np.uint8)
        self._ball_row = self._ball_col = self._left = self._done_balls = 0

    def _obs(self) -> np.ndarray:
        frame = np.zeros((self.size, self.size), np.uint8)
        frame[-1, self._left:self._left + self.paddle] = PADDLE
        frame[self._ball_row, self._ball_col] = BALL
        return frame

    def _new_ball(self) -> None:
        self._ball_row = 0
        self._ball_col = int(self.np_random.integers(self.size))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._left = (self.size - self.paddle) // 2
        self._done_balls = 0
        self._new_ball()
        return self._obs(), {}

    def step(self, action: Any):
        a = int(action)
        if not 0 <= a < 3:
            raise ValueError(f"action {action!r} is outside Catch's Discrete(3) (0 left, 1 stay, 2 right)")
        self._left = min(max(self._left + a - 1, 0), self.size - self.paddle)
        self._ball_row += 1
        reward = 0.0
        terminated = False
        if self._ball_row == self.size - 1:
            reward = 1.0 if self._left <= self._ball_col < self._left + self.paddle else -1.0
            self._done_balls += 1
            if self._done_balls == self.balls:
                terminated = True
            else:
                self._new_ball()  # the next ball is on the next frame already
        return self._obs(), reward, terminated, False, {}

    def __repr__(self) -> str:
        return f"CatchEnv(size={self.size}, paddle={self.paddle}, balls={self.balls})"
