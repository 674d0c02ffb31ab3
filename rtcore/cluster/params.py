"""Parameter versions into a node: a thread that copies the learner group's newest version into a local
ParamStore.

The follower long-polls :meth:`rtcore.cluster.learners.LearnerGroup.newer`, fetches the version's object
(``ray.get``: moved into this node's object store, then a read-only numpy view of it) and publishes it
into the node's ParamStore, where the workers pick it up as in a local run. It measures each step: the
fetch (network + store), the local publish (one copy), and the age of the version when it lands (wall
clock from the group's ``ray.put`` to the local publish; on one machine, or with synchronized clocks).
Local versions count up on their own; :attr:`ParamFollower.global_of` maps a local version to the
learner group's. When the group is gone (its node lost), the follower says so and stops: the node acts on
with the last version it has.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from rtcore.cluster._ray import lost_errors

__all__ = ["ParamFollower"]

POLL_S = 0.5  # long-poll timeout of one request to the group


class ParamFollower:
    """Copies the learner group's newest parameter version into ``store`` (a thread; :meth:`start`)."""

    def __init__(self, group: Any, store: Any, have: int, name: str = "rtcore-param-follower") -> None:
        self.group = group
        self.store = store
        self.have = int(have)
        self.global_of: dict[int, int] = {int(store.version): int(have)}
        self.fetch_s: list[float] = []
        self.publish_s: list[float] = []
        self.age_s: list[float] = []
        self.skipped = 0
        self.lost: str | None = None
        self.nbytes = int(store.numel) * 4
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "ParamFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(POLL_S + 5.0)

    @property
    def received(self) -> int:
        return len(self.publish_s)

    def _loop(self) -> None:
        import ray

        lost = lost_errors()
        while not self._stop.is_set():
            try:
                got = ray.get(self.group.newer.remote(self.have, POLL_S), timeout=POLL_S + 30.0)
            except lost as exc:
                self.lost = f"the learner group is gone ({type(exc).__name__}); acting goes on with version {self.have}"
                return
            except ray.exceptions.GetTimeoutError:
                continue
            if got is None:
                continue
            version, t_put, (ref,) = got
            t0 = time.perf_counter()
            try:
                flat = ray.get(ref, timeout=60.0)
            except lost as exc:
                self.lost = f"a parameter version was lost with its node ({type(exc).__name__})"
                return
            except ray.exceptions.GetTimeoutError:
                continue
            t1 = time.perf_counter()
            local = self.store.publish(np.asarray(flat), timeout=1.0)
            t2 = time.perf_counter()
            del flat, ref
            if local < 0:  # every spare buffer pinned for a second: the next version carries it
                self.skipped += 1
                continue
            self.have = int(version)
            self.global_of[int(local)] = int(version)
            self.fetch_s.append(t1 - t0)
            self.publish_s.append(t2 - t1)
            self.age_s.append(time.time() - t_put)

    def stats(self) -> dict[str, Any]:
        """Versions received, the newest, and the medians of each step (ms)."""

        def p50(xs: list[float]) -> float:
            return float(np.median(xs) * 1e3) if xs else float("nan")

        return {"versions_received": self.received, "global_version": self.have, "skipped": self.skipped,
                "fetch_ms_p50": p50(self.fetch_s), "publish_ms_p50": p50(self.publish_s),
                "age_ms_p50": p50(self.age_s), "bytes": self.nbytes, "lost": self.lost}
