"""rtcore: realtime reinforcement learning at scale.

An agent with a large, slow model acts in an environment that does not wait for it, and learns while
it plays: N staggered asynchronous inference processes keep an action ready at every environment tick
(Riemer et al., "Enabling Realtime Reinforcement Learning at Scale with Staggered Asynchronous
Inference", ICLR 2025). The hot, concurrent parts (replay buffer, boards, timer, scheduler) are C++ in
``rtcore._core``; this package is the public API.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first use so `import rtcore` stays light
# (torch, ale-py and pyboy load only when something needs them).
_EXPORTS = {
    "LayoutError": "rtcore.errors",
    "StateError": "rtcore.errors",
    "ClosedError": "rtcore.errors",
    "SlotError": "rtcore.errors",
    "BusyError": "rtcore.errors",
    "ReplayBuffer": "rtcore.shared.replay",
    "ReplayBatch": "rtcore.shared.replay",
    "Timer": "rtcore.shared.timer",
    "monotonic": "rtcore.shared.timer",
    "ObsBoard": "rtcore.shared.boards",
    "ActionBoard": "rtcore.shared.boards",
    "StaggerSchedule": "rtcore.shared.sched",
    "Turnstile": "rtcore.shared.sched",
    "n_star": "rtcore.shared.sched",
    "simulate": "rtcore.simulation",
    "SimulationResult": "rtcore.simulation",
    "ParamStore": "rtcore.shared.params",
    "make": "rtcore.envs",
    "RunConfig": "rtcore.agent.config",
    "run": "rtcore.launch",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rtcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
