"""What every rtcore environment provides, and the checks they share.

An rtcore env is a Gymnasium env (``reset``/``step``/``close``, ``observation_space``, ``action_space``)
that also exposes:

* ``default_action``: the action applied on a tick with no fresh agent action (the no-op);
* ``frame_time``: the native seconds per env step (Atari 1/60, Game Boy 1/59.7275), which the driver
  ticks at by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_discrete_action(action: Any, n: int, env_id: str) -> int:
    """``action`` as an int in [0, n), or a ValueError naming the action space."""
    if isinstance(action, np.ndarray) and action.ndim == 0:
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) or not 0 <= action < n:
        raise ValueError(f"action {action!r} is outside the action space Discrete({n}) of {env_id}")
    return int(action)
