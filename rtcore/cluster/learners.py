"""The learner group on its node: M learners in turnstile order, and the parameter versions they publish.

:class:`LearnerGroup` (a threaded Ray actor) creates the learner node's shared objects, exactly those of
a local run's learners: the ParamStore the learners publish to, the learner state (master parameters,
Adam moments, target network), the Turnstile and the telemetry rows. :class:`Learner` actors (one per
learner, same bundle, so same node) attach them and run the local learner's entry point,
:func:`rtcore.agent.learner.learner_main`, unchanged, on batches from the env nodes' shards
(:class:`rtcore.cluster.sampler.ShardBatches` stands in for the ReplayBuffer and, for the throttle, the
ObsBoard). So the turnstile keeps its meaning: one learner applies at a time, each gradient computed on
parameters at most M - 1 versions old; ``--updates-per-step`` counts the env steps of all env nodes.

Parameter versions leave the node through Ray's object store: a publisher thread of the group, at most
every ``--param-interval`` seconds, pins the newest version of the local ParamStore and ``ray.put``s it
(one copy into the store); env nodes and remote workers long-poll :meth:`LearnerGroup.newer` and copy
the version they get into their own ParamStore. Only the newest version's object is kept referenced.

GPU learners (``--learner-gpus``): the group takes a share of the same GPU, keeps the learner state there
and hands it to the learners as CUDA IPC handles (as a local run's GPU learners share it).

Stalled learners: a watchdog thread of the group does on the learner node what a local run's runner does
(:mod:`rtcore.agent.stall`): a learner whose turnstile heartbeat has been silent for half the turnstile's
timeout (a stopped or descheduled process) is SIGKILLed before the turnstile hands its turn on, so it
cannot wake up and write the shared learner state out of turn. The group counts the kills per learner
and keeps the faults; the driver (:mod:`rtcore.cluster.runner`) sees the learner's actor die, reports
the faults and respawns the learner in the same bundle.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Any

import numpy as np

__all__ = ["LearnerGroup", "Learner"]


class LearnerGroup:
    """Ray actor (threaded): the learner node's shared objects, the parameter publisher, the group's status."""

    def __init__(self, params0: np.ndarray, n_learners: int, device: str, param_interval: float,
                 heartbeat_timeout: float) -> None:
        import ray

        import rtcore
        from rtcore.agent.telemetry import Telemetry
        from rtcore.shared._shm import reclaim_dead_segments
        from rtcore.shared.shared_array import SharedArray

        reclaim_dead_segments()  # what a killed earlier run left on this node
        self._ray = ray
        numel = int(params0.size)
        self.n = int(n_learners)
        self.device = device
        readers = self.n + 4
        self.params = rtcore.ParamStore(numel, buffers=readers + 2, max_readers=readers)
        self.params.publish(params0)
        from rtcore.agent.optim import STATE_ROWS, StepJournal, init_learner_state, new_learner_state

        if device == "cpu":  # as a local run's learner state (rtcore.agent.optim): two banks and the target
            self.state: Any = SharedArray((STATE_ROWS, numel), "float32")
            init_learner_state(self.state.array, params0)
        else:
            import torch

            self.state = new_learner_state(params0, device)
            torch.cuda.synchronize()
        self.turnstile = rtcore.Turnstile(max(1, self.n), heartbeat_timeout=max(2.0, heartbeat_timeout))
        self.telemetry = Telemetry(1, max(1, self.n))
        StepJournal(self.telemetry.control).reset(0)  # step 0, nothing pending
        self.interval = float(param_interval)
        self.cond = threading.Condition()
        self.latest: tuple[int, float, list[Any]] = (-1, 0.0, [])
        self.put_s: list[float] = []
        self.closing = False
        self._put_newest()
        self.thread = threading.Thread(target=self._publisher, name="rtcore-param-publisher", daemon=True)
        self.thread.start()
        # the stalled-learner watchdog: kills per learner, their faults, (pid, start time) of each learner
        self.stall_lock = threading.Lock()
        self.stall_kills = [0] * max(1, self.n)
        self.stall_faults: list[str] = []
        self._procs: dict[int, tuple[int, int | None]] = {}
        self.watchdog = threading.Thread(target=self._watchdog, name="rtcore-learner-watchdog", daemon=True)
        self.watchdog.start()

    def handles(self) -> bytes:
        """The shared objects, pickled for the learners on this node (segment names; CUDA IPC handles)."""
        from multiprocessing.reduction import ForkingPickler

        if self.device != "cpu":
            import torch.multiprocessing  # noqa: F401  (registers the CUDA tensor reductions)
        objs = {"params": self.params, "state": self.state, "turnstile": self.turnstile, "telemetry": self.telemetry}
        return bytes(ForkingPickler.dumps(objs, protocol=pickle.HIGHEST_PROTOCOL))

    # --- parameter versions out of the node
    def _put_newest(self) -> bool:
        if self.params.version == self.latest[0]:
            return False
        t0 = time.perf_counter()
        with self.params.read() as (version, view):
            ref = self._ray.put(view)  # one copy, into the object store, while the version is pinned
        dt = time.perf_counter() - t0
        with self.cond:
            self.latest = (int(version), time.time(), [ref])
            self.put_s.append(dt)
            self.cond.notify_all()
        return True

    def _publisher(self) -> None:
        while not self.closing:
            t0 = time.monotonic()
            try:
                self._put_newest()
            except Exception as exc:  # a store that is full says so in the status; the next round retries
                self.error = f"{type(exc).__name__}: {exc}"
            time.sleep(max(0.0, self.interval - (time.monotonic() - t0)))

    # --- stalled learners
    def _learner_pids(self) -> dict[int, int]:
        """``slot -> pid`` of the learner processes that run now (pid and start time: never a reused pid)."""
        from rtcore.agent.telemetry import LearnerCol
        from rtcore.shared._liveness import alive, start_time

        rows = self.telemetry.learners
        out = {}
        for j in range(self.n):
            pid = int(rows[j, LearnerCol.PID])
            if pid <= 0:
                continue
            if self._procs.get(j, (None,))[0] != pid:  # a new learner in this slot (the first, or a respawn)
                self._procs[j] = (pid, start_time(pid))
            if self._procs[j][1] is not None and alive(pid, self._procs[j][1]):
                out[j] = pid
        return out

    def check_stalled(self) -> list[int]:
        """Kills the learners stalled for half the turnstile's timeout (:func:`rtcore.agent.stall.kill_stalled_learners`);
        returns their slots."""
        from rtcore.agent.stall import kill_stalled_learners
        from rtcore.agent.telemetry import Control

        with self.stall_lock:  # a status taken after a learner's death was seen includes its kill
            if self.closing or self.telemetry.control[Control.STOP]:
                return []
            killed = kill_stalled_learners(self.telemetry.learners, self._learner_pids(),
                                           self.turnstile.heartbeat_timeout, self.stall_faults.append)
            for j in killed:
                self.stall_kills[j] += 1
            return killed

    def _watchdog(self) -> None:
        period = min(0.05, self.turnstile.heartbeat_timeout / 8)  # well inside the half timeout
        while not self.closing:
            try:
                self.check_stalled()
            except Exception as exc:  # said in the status; the next round retries
                self.error = f"watchdog: {type(exc).__name__}: {exc}"
            time.sleep(period)

    def newer(self, have: int, timeout: float) -> tuple[int, float, list[Any]] | None:
        """Long poll: ``(version, put wall time, [ObjectRef])`` of the newest version once it is newer than
        ``have``, or None after ``timeout`` seconds."""
        with self.cond:
            self.cond.wait_for(lambda: self.latest[0] > have or self.closing, timeout)
            return self.latest if self.latest[0] > have else None

    # --- status and end
    def status(self) -> dict[str, Any]:
        from rtcore.agent.telemetry import Control

        c = self.telemetry.control
        put = np.asarray(self.put_s[-1000:])
        with self.stall_lock:
            kills, faults = list(self.stall_kills), list(self.stall_faults)
        return {"stall_kills": kills, "stall_faults": faults,
                "updates": int(c[Control.UPDATES]), "version": int(self.params.version), "pid": os.getpid(),
                "learners": self.telemetry.learners[: max(1, self.n)].copy(),
                "param_put_ms_p50": float(np.median(put) * 1e3) if put.size else float("nan"),
                "versions_put": len(self.put_s), "error": getattr(self, "error", None)}

    def stop(self) -> None:
        """Tells the learners to stop (they leave their loops and return)."""
        from rtcore.agent.telemetry import Control

        self.telemetry.control[Control.STOP] = 1
        self.turnstile.stop()
        with self.cond:
            self.closing = True
            self.cond.notify_all()

    def final(self) -> tuple[int, np.ndarray]:
        """The learners' master parameters (every applied update; call after they stopped) and the version."""
        from rtcore.agent.optim import read_learner_state

        state = self.state.array if self.device == "cpu" else self.state
        _, params, _, _ = read_learner_state(state, self.telemetry.control)
        return int(self.params.version), np.asarray(params, dtype=np.float32)

    def close(self) -> None:
        self.stop()
        self.thread.join(2 * self.interval + 1.0)
        self.watchdog.join(1.0)
        for obj in (self.telemetry, self.turnstile, self.params):
            obj.close()
        if self.device == "cpu":
            self.state.close()


class Learner:
    """Ray actor (one per learner, in the learner group's bundle): the local learner process's loop."""

    def run(self, j: int, handles: bytes, shards: list[tuple[int, Any]], setup: dict[str, Any]) -> dict[str, Any]:
        """Runs learner ``j`` until the group says stop; returns what it did (updates, batches, the time it
        waited for batches, the shards it lost)."""
        from rtcore.agent.dqn import LearnerConfig
        from rtcore.agent.learner import LearnerSpec, learner_main
        from rtcore.agent.telemetry import LearnerCol
        from rtcore.cluster.sampler import ShardBatches

        if setup["device"] != "cpu":
            import torch.multiprocessing  # noqa: F401  (CUDA IPC handles unpickle as shared tensors)
        objs = pickle.loads(handles)
        lcfg = LearnerConfig(**setup["learner_config"])
        batches = ShardBatches(shards, lcfg.batch_size, lcfg.learn_on, lcfg.prioritized, setup["frame_stack"],
                               tuple(setup["obs_shape"]), setup["obs_dtype"], setup["prefetch"],
                               action_history=setup["action_history"])
        spec = LearnerSpec(learner=j, model_spec=setup["model_spec"], in_frames=setup["frame_stack"],
                           n_actions=setup["n_actions"], config=lcfg, device=setup["device"],
                           threads=setup["threads"], nice=setup["nice"], learning_starts=setup["learning_starts"],
                           updates_per_step=setup["updates_per_step"], params=objs["params"], replay=batches,
                           turnstile=objs["turnstile"], state=objs["state"], telemetry=objs["telemetry"],
                           obs_board=batches, seed=setup["seed"] + 1000 + j, obs_shape=tuple(setup["obs_shape"]),
                           action_history=setup["action_history"])
        try:
            learner_main(spec)
        finally:
            batches.close()
        return {"updates": int(objs["telemetry"].learners[j, LearnerCol.UPDATES]), "batches": batches.batches,
                "batch_wait_s": batches.wait_s, "shards_lost": list(batches.lost)}
