"""Counters in shared memory that the inference workers and learners write and the runner reads.

Each process writes its own row (one writer per cell, plain 8-byte stores) and the runner reads them
once per metrics interval; nothing is on a lock or a queue, so a worker's hot loop just adds to its
row. Each worker also keeps a ring of the wall-clock times at which it posted actions, from which the
runner rebuilds the action intervals (:class:`PostIntervals`).
"""

from __future__ import annotations

import numpy as np

from rtcore.shared._liveness import parent_gone

__all__ = ["Control", "LearnerCol", "PostIntervals", "Telemetry", "WorkerCol"]


class WorkerCol:
    """Columns of a worker's row in ``Telemetry.workers`` (float64)."""

    HEARTBEAT = 0    # time.monotonic() of the worker's last sign of life
    PID = 1
    STARTS = 2       # processes that have run in this slot (1 + respawns)
    TURNS = 3        # turns taken (= actions posted)
    READ_S = 4       # seconds reading the ObsBoard (sum)
    INFER_S = 5      # seconds in forward passes, emulated delay included (sum)
    POST_S = 6       # seconds posting to the ActionBoard (sum)
    WAIT_S = 7       # seconds waiting for a turn or for the publish time (sum)
    PICKUP_S = 8     # seconds picking up new parameter versions (sum)
    INFER_MAX = 9    # longest forward pass seen
    VERSION = 10     # parameter version of the last action
    PICKUPS = 11     # parameter versions picked up
    RANDOM = 12      # epsilon-greedy random actions
    EPSILON = 13     # epsilon of the last action
    LAST_STEP = 14   # env step of the observation of the last action
    POSTS = 15       # entries written to this worker's post-time ring (monotonic)
    VERSION_LAG = 16  # versions the acted-on parameters trailed the newest by at the turn's start (sum; frozen backend)
    REFRESHES = 17   # new versions written into the frozen module's spare copy (frozen backend)
    REFRESH_S = 18   # seconds the refresh thread spent writing them (sum; off the worker's hot path)
    COUNT = 19


class LearnerCol:
    """Columns of a learner's row in ``Telemetry.learners`` (float64)."""

    HEARTBEAT = 0
    PID = 1
    STARTS = 2
    UPDATES = 3      # updates this slot applied
    SAMPLE_S = 4     # seconds sampling the replay buffer (sum)
    GRAD_S = 5       # seconds computing gradients (forward + backward, sum)
    WAIT_S = 6       # seconds waiting for the round-robin turn (sum)
    APPLY_S = 7      # seconds applying the update and publishing (sum)
    LOSS = 8         # loss of the last update
    Q_MEAN = 9       # mean Q(s, a) of the last batch
    GRAD_NORM = 10   # gradient norm of the last update (before clipping)
    VERSION = 11     # parameter version this learner last published
    STALENESS = 12   # versions published between this learner's snapshot and its update (sum)
    READY = 13       # 1 once the process has built its model and run a warm-up gradient
    TURN_BEAT = 14   # the turnstile heartbeat thread's last beat (monotonic s; 0 when not in the turnstile)
    COUNT = 15


class Control:
    """Slots of ``Telemetry.control`` (int64): run-wide flags and counters."""

    STOP = 0            # set to 1 by the runner: every child leaves its loop
    UPDATES = 1         # updates applied by all learners (written by the turn holder only)
    TARGET_VERSION = 2  # bumped each time the shared target network is refreshed
    OPT_STEP = 3        # Adam's step count (written by the turn holder only)
    ACTIVE_WORKERS = 4  # elastic N: workers with an index >= this retire (0: no limit; written by the runner)
    INFERENCE_DELAY_NS = 5  # emulated extra latency per pass, ns (written by the runner; read by workers each pass)
    # the optimizer-step journal (rtcore.agent.optim): written by the turn holder only
    JOURNAL_STEP = 6       # the step being applied (> OPT_STEP until its commit)
    JOURNAL_UPDATES = 7    # UPDATES once that step is done
    JOURNAL_TARGET = 8     # TARGET_VERSION once that step is done
    JOURNAL_DONE = 9       # the last step whose tail (target refresh, publish, counters) finished
    STEPS_ROLLED_BACK = 10  # steps whose learner died before the commit (nothing of them kept)
    STEPS_COMPLETED = 11    # committed steps whose learner died in the tail (the next turn holder finished it)
    JOURNAL_OWNER = 12      # pid of the learner applying JOURNAL_STEP (a stalled one that lost the turn must not commit)
    COUNT = 16


class Telemetry:
    """Shared counters of one run: rows for ``max_workers`` workers and ``max_learners`` learners.

    Pickles as the names of its arrays; a spawned child gets an attached copy.
    """

    RING = 4096  # post times kept per worker; the runner reads them every metrics interval

    def __init__(self, max_workers: int, max_learners: int, *, _arrays: tuple | None = None) -> None:
        from rtcore.shared.shared_array import SharedArray

        if _arrays is None:
            if max_workers < 1 or max_learners < 0:
                raise ValueError(f"need max_workers >= 1 and max_learners >= 0, got {max_workers}, {max_learners}")
            _arrays = (
                SharedArray((max_workers, WorkerCol.COUNT), "float64"),
                SharedArray((max(1, max_learners), LearnerCol.COUNT), "float64"),
                SharedArray((max_workers, self.RING), "float64"),
                SharedArray((Control.COUNT,), "int64"),
            )
        self._arrays = _arrays
        self.workers: np.ndarray = _arrays[0].array
        self.learners: np.ndarray = _arrays[1].array
        self.post_times: np.ndarray = _arrays[2].array
        self.control: np.ndarray = _arrays[3].array

    def __reduce__(self):
        return (_attach_telemetry, (self._arrays,))

    def close(self) -> None:
        for a in self._arrays:
            a.close()

    # --- written by children
    @property
    def stopping(self) -> bool:
        """The runner asked every child to stop, or (in a child) the runner is gone."""
        return bool(self.control[Control.STOP]) or parent_gone()

    def record_post(self, worker: int, t: float) -> None:
        """Worker ``worker`` posted an action at monotonic time ``t`` (one writer per row)."""
        row = self.workers[worker]
        k = int(row[WorkerCol.POSTS])
        self.post_times[worker, k % self.RING] = t
        row[WorkerCol.POSTS] = k + 1  # written after the time: a reader that sees k+1 sees the time


class PostIntervals:
    """Rebuilds action intervals from the workers' post-time rings, incrementally (runner side)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry
        self._seen = np.zeros(telemetry.workers.shape[0], dtype=np.int64)
        self._last: float | None = None

    def collect(self) -> np.ndarray:
        """Intervals (seconds) between consecutive posts since the last call, across all workers."""
        times: list[np.ndarray] = []
        ring = Telemetry.RING
        for w in range(self._t.workers.shape[0]):
            n = int(self._t.workers[w, WorkerCol.POSTS])
            start = max(int(self._seen[w]), n - ring)
            if n > start:
                idx = np.arange(start, n) % ring
                times.append(self._t.post_times[w, idx].copy())
            self._seen[w] = n
        if not times:
            return np.empty(0)
        t = np.sort(np.concatenate(times))
        if self._last is not None:
            t = np.concatenate(([self._last], t[t >= self._last]))
        self._last = float(t[-1])
        return np.diff(t)

    def reset_worker(self, w: int) -> None:
        """A respawned worker starts its ring from 0 again."""
        self._seen[w] = 0


def _attach_telemetry(arrays: tuple) -> Telemetry:
    return Telemetry(0, 0, _arrays=arrays)


