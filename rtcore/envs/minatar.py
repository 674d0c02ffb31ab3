"""The five MinAtar games (Young & Tian 2019) as rtcore envs: ``rtcore.make("minatar/Breakout")``.

Ids: ``minatar/Asterix``, ``minatar/Breakout``, ``minatar/Freeway``, ``minatar/Seaquest``,
``minatar/SpaceInvaders`` (``pip install "rtcore[minatar]"``). Each step is one MinAtar frame; the
action space is the game's minimal action set (index 0 is the no-op in every game, and the
``default_action``); MinAtar's own sticky actions (probability 0.1) and difficulty ramping are on, as
in the paper.

Observations: :class:`MinAtarEnv` returns MinAtar's own ``10 x 10 x C`` bool state; ``rtcore.make`` wraps it
in :class:`rtcore.envs.adapter.RealtimeEnv`, which stores it channel-first as ``C x 10 x 10`` uint8 0/255
(every image model scales pixels by 1/255, so the channels are 0/1 again).

MinAtar has no native frame rate; rtcore runs it at 100 steps per second (``frame_time`` 10 ms), a
realtime pace at which a small CPU keeps up with acting and learning. ``--frequency`` changes it.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["MinAtarEnv", "MINATAR_GAMES", "FRAME_TIME"]

MINATAR_GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
FRAME_TIME = 1 / 100


def _import_minatar() -> Any:
    try:
        # minatar logs a warning at import when matplotlib/seaborn (its GUI) are missing: not our concern
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            from minatar import Environment
        finally:
            root.setLevel(level)
    except ImportError:
        raise ImportError('the minatar/... environments need the minatar package: pip install "rtcore[minatar]"') \
            from None
    return Environment


class MinAtarEnv(gym.Env):
    """One MinAtar game (see the module docstring).

    Args:
        game: ``Asterix``, ``Breakout``, ``Freeway``, ``Seaquest`` or ``SpaceInvaders``.
        sticky_action_prob: MinAtar's sticky-action probability (0.1 as in the paper).
        difficulty_ramping: MinAtar's difficulty ramping (on, as in the paper).
        frame_time: seconds per step at the native rate.
    """

    metadata = {"render_modes": []}

    def __init__(self, game: str = "Breakout", *, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 frame_time: float = FRAME_TIME) -> None:
        if game not in MINATAR_GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}: expected one of {', '.join(MINATAR_GAMES)}")
        if not 0.0 <= float(sticky_action_prob) <= 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1], got {sticky_action_prob!r}")
        Environment = _import_minatar()
        self.game = game
        self._env = Environment(MINATAR_GAMES[game], sticky_action_prob=float(sticky_action_prob),
                                difficulty_ramping=bool(difficulty_ramping))
        self._actions = list(self._env.minimal_action_set())
        h, w, c = self._env.state_shape()
        self.frame_time = float(frame_time)
        self.default_action = 0  # the no-op: action 0 of every game's minimal set
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.obs_layout = "hwc"
        self.observation_space = gym.spaces.Box(0, 1, (h, w, c), np.bool_)

    def _obs(self) -> np.ndarray:
        return self._env.state()  # (h, w, c) bool

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))
        self._env.reset()
        return self._obs(), {}

    def step(self, action: Any):
        a = int(action)
        if not 0 <= a < len(self._actions):
            raise ValueError(f"action {action!r} is outside {self.game}'s Discrete({len(self._actions)})")
        reward, terminal = self._env.act(self._actions[a])
        return self._obs(), float(reward), bool(terminal), False, {}

    def __repr__(self) -> str:
        return f"MinAtarEnv({self.game!r})"
