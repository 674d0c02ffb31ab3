"""Remote inference workers (``--workers-on gpu``): the forward pass on another node, the schedule at home.

A :class:`RemoteWorker` is a Ray actor (``--worker-gpus`` of a GPU each; four workers at 0.25 share
one) holding the run's model and its own ParamStore, kept current by a
:class:`rtcore.cluster.params.ParamFollower`. It runs the local worker's :class:`rtcore.agent.inference.Actor`
(parameters pinned for the pass, epsilon-greedy by the observation's env step, noisy nets re-drawn on a
new version), on a frame stack it is sent instead of one it reads from an ObsBoard.

The staggering stays on the env node: each remote worker has a relay thread there
(:func:`relay_loop`) that takes the worker's turn in the node's StaggerSchedule, reads the ObsBoard,
sends the stack, waits for the action and posts it to the ActionBoard. The round trip (network both
ways + the forward pass) is what the relay reports to the schedule as the pass's inference time, so
tau_max and the spacing of the workers include the network, and the action's delay (its env step
against the step it is applied at) counts it too. The relay measures the network part (round trip
minus the remote forward pass) separately.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable

import numpy as np

from rtcore.cluster._ray import lost_errors

__all__ = ["RemoteWorker", "relay_loop"]


class _Given:
    """The ObsBoard face an Actor reads from: the stack the relay sent."""

    def __init__(self, action_history: int) -> None:
        self.action_history = action_history  # the Actor checks it against its model's
        self.stack: np.ndarray | None = None
        self.history: np.ndarray | None = None
        self.step = -1
        self.published = 1

    def read(self, out: np.ndarray, history: np.ndarray | None = None, actions: Any = None) -> tuple[None, int]:
        np.copyto(out, self.stack)
        if history is not None:  # the env node read it with the stack (the pending action looked up there)
            np.copyto(history, self.history)
        return None, self.step


class RemoteWorker:
    """Ray actor: one inference worker away from the env node."""

    def __init__(self, index: int, model_bytes: bytes, model_suffix: str, actor: dict[str, Any], frame_stack: int,
                 obs_shape: tuple[int, ...], obs_dtype: str, group: Any, params0: np.ndarray, version0: int) -> None:
        import torch

        import rtcore
        from rtcore.agent.inference import Actor, ActorConfig
        from rtcore.cluster.params import ParamFollower

        torch.set_num_threads(1)
        self.dir = tempfile.mkdtemp(prefix="rtcore-remote-worker-")
        path = os.path.join(self.dir, "model" + model_suffix)
        with open(path, "wb") as fh:
            fh.write(model_bytes)
        self.params = rtcore.ParamStore(int(params0.size), buffers=4, max_readers=2)
        self.params.publish(params0)
        self.given = _Given(int(actor.get("action_history", 0)))
        self.actor = Actor(ActorConfig(**{**actor, "model_path": path}), self.given, self.params, frame_stack,
                           tuple(obs_shape), np.dtype(obs_dtype))
        self.actor.warmup()
        self.follower = ParamFollower(group, self.params, version0, name=f"rtcore-remote-worker-{index}").start()
        self.index = index

    def act(self, stack: np.ndarray, step: int, history: np.ndarray | None = None) -> tuple[int, int, float]:
        """``(action, global parameter version, seconds of the forward pass)`` for the frame stack at ``step``
        (and its action history, with ``--action-history``)."""
        self.given.stack, self.given.step, self.given.history = stack, int(step), history
        t0 = time.perf_counter()
        action, _, _, _ = self.actor.act()
        dt = time.perf_counter() - t0
        return int(action), self.follower.global_of.get(self.actor.version, -1), dt

    def stats(self) -> dict[str, Any]:
        return self.follower.stats()

    def close(self) -> None:
        import shutil

        self.follower.stop()
        self.actor.close()
        self.params.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RelayStats:
    """What the relays of one env node measured (round trips and their network part, seconds)."""

    def __init__(self) -> None:
        self.round_trip: list[float] = []
        self.network: list[float] = []
        self.lost: list[str] = []


def relay_loop(w: int, handle: Any, node: Any, stats: RelayStats, stopping: Callable[[], bool],
               fault: Callable[[str], None]) -> None:
    """The relay of remote worker ``w`` on its env node (``node``: the node's local runner)."""
    import ray

    from rtcore.agent._proc import join_slot
    from rtcore.agent.inference import take_turns
    from rtcore.agent.telemetry import WorkerCol

    lost = lost_errors()
    sched, tel, board = node.schedule, node.telemetry, node.obs_board
    row = tel.workers[w]
    row[WorkerCol.PID] = os.getpid()
    row[WorkerCol.HEARTBEAT] = time.monotonic()
    row[WorkerCol.STARTS] += 1
    stack = np.zeros((node.cfg.frame_stack, *node.obs_shape), dtype=node.obs_dtype)
    k = int(node.cfg.action_history)
    hist = np.zeros(k + 1, np.int64) if k else None
    stop = lambda: stopping() or tel.stopping  # noqa: E731
    while board.published < 1:
        if stop():
            return
        try:
            board.wait_step(-1, 0.05)
        except TimeoutError:
            pass
    slot = join_slot(sched.join, w, sched.heartbeat_timeout + 2 * sched.tau_max + 5.0, stop)
    if slot is None:
        return

    def act() -> tuple[int, int] | None:
        t0 = time.monotonic()
        if hist is None:
            _, step = board.read(out=stack)
        else:
            _, step = board.read(out=stack, history=hist, actions=node.action_board)
        t1 = time.monotonic()
        try:
            action, version, compute = ray.get(handle.act.remote(stack, step, hist),
                                               timeout=max(10.0, 50 * sched.tau_max))
        except (lost + (ray.exceptions.GetTimeoutError,)) as exc:
            stats.lost.append(f"remote worker {w}")
            fault(f"remote worker {w} lost ({type(exc).__name__}); dropped from the schedule, the others re-stagger")
            return None
        t2 = time.monotonic()  # the network both ways is part of this pass, as the schedule is told
        stats.round_trip.append(t2 - t1)
        stats.network.append(max(0.0, t2 - t1 - compute))
        row[WorkerCol.READ_S] += t1 - t0
        row[WorkerCol.INFER_S] += t2 - t1
        row[WorkerCol.INFER_MAX] = max(row[WorkerCol.INFER_MAX], t2 - t1)
        row[WorkerCol.LAST_STEP] = step
        if version >= 0 and version != row[WorkerCol.VERSION]:
            row[WorkerCol.PICKUPS] += 1
            row[WorkerCol.VERSION] = version
        return int(action), int(step)

    take_turns(sched, slot, tel, w, act, node.action_board.post, stop)
