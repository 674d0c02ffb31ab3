"""The stalled-learner kill, shared by the local runner and the cluster's learner group.

A learner in the turnstile beats its heartbeat from a thread and writes the time of each beat into its
telemetry row (``LearnerCol.TURN_BEAT``, monotonic seconds, 0 when it is not in the turnstile). A learner
whose beat has been silent for half the turnstile's heartbeat timeout is stopped (SIGSTOP, a frozen
cgroup) or descheduled: at the full timeout the turnstile would hand its turn on, and a learner that woke
up after that would write the shared learner state out of turn (:mod:`rtcore.agent.optim`). So its
watcher (the runner's supervisor loop on one machine, the learner group's watchdog thread on a cluster's
learner node) SIGKILLs it first, and then respawns it like any dead learner.

Both watchers run on the learners' machine: ``TURN_BEAT`` is ``time.monotonic()``, which is one clock for
every process of a machine (Linux ``CLOCK_MONOTONIC``), and the learners are killed by pid.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Mapping

import numpy as np

from rtcore.agent.telemetry import LearnerCol

__all__ = ["STALL_FRACTION", "stall_limit", "stalled_learners", "kill_stalled_learners"]

STALL_FRACTION = 0.5  # of the turnstile's heartbeat timeout


def stall_limit(heartbeat_timeout: float) -> float:
    """Seconds of heartbeat silence after which a learner counts as stalled."""
    return STALL_FRACTION * float(heartbeat_timeout)


def stalled_learners(rows: np.ndarray, slots: object, heartbeat_timeout: float,
                     now: float | None = None) -> list[tuple[int, float]]:
    """``(slot, silent seconds)`` of each of ``slots`` whose turnstile heartbeat (``rows[slot, TURN_BEAT]``,
    ``rows`` being ``Telemetry.learners``) is set and older than :func:`stall_limit`."""
    limit = stall_limit(heartbeat_timeout)
    now = time.monotonic() if now is None else now
    out = []
    for j in slots:  # type: ignore[attr-defined]
        beat = float(rows[j, LearnerCol.TURN_BEAT])
        if beat > 0 and now - beat > limit:
            out.append((int(j), now - beat))
    return out


def kill_stalled_learners(rows: np.ndarray, pids: Mapping[int, int], heartbeat_timeout: float,
                          fault: Callable[[str], None]) -> list[int]:
    """SIGKILLs each learner ``slot -> pid`` of ``pids`` that :func:`stalled_learners` finds, clears its
    ``TURN_BEAT`` (so it is killed once) and reports it through ``fault``; returns the slots killed. A pid
    that is already gone is skipped (its death is seen, and handled, as any other)."""
    killed = []
    for j, silent in stalled_learners(rows, pids, heartbeat_timeout):
        try:
            os.kill(int(pids[j]), signal.SIGKILL)
        except ProcessLookupError:
            continue
        rows[j, LearnerCol.TURN_BEAT] = 0.0
        killed.append(j)
        fault(f"learner {j} stalled (no heartbeat for {silent:.1f} s: a stopped or descheduled process); killed "
              f"before the turnstile hands its turn on, so it cannot write the shared state out of turn")
    return killed
