"""Replay batches across nodes: a sampler actor next to each env node's shard, and the learner's view of them.

:class:`ShardSampler` is a Ray actor placed in its env node's bundle (same machine, so it attaches the
node's ReplayBuffer and ObsBoard by segment name). Each call draws one batch with
``ReplayBuffer.sample`` and returns its arrays; Ray moves them through its object store to the learner's
node (one copy into the store here, zero-copy numpy views out of it there).

:class:`ShardBatches` is what a learner process samples from instead of a local ReplayBuffer: it has
the ``ReplayBuffer`` methods :class:`rtcore.agent.dqn.DQNLearner` and
:func:`rtcore.agent.learner.learner_main` use (``sample(n, out=)``, ``empty_batch``, ``__len__``,
``seed``, ``prioritized``, ``update_priorities``) and the ``ObsBoard`` ones the learner's throttle uses
(``step``, ``wait_step``). A fetcher thread keeps ``prefetch`` requests in flight per shard and pulls the
batches to the learner's node round-robin over the shards, so a batch travels while the learner computes
on the previous one; the wait for one that has not arrived yet is counted in the learner's sample time.
A shard whose actor is gone (its node was lost) is dropped and counted; the others carry on.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from rtcore.cluster._ray import lost_errors

__all__ = ["ShardSampler", "ShardBatches", "BATCH_FIELDS"]

BATCH_FIELDS = ("obs", "next_obs", "action", "reward", "done", "discount", "was_default", "delay", "index", "weight",
                "action_history", "next_action_history")
STATS_EVERY = 0.2  # seconds between size/step refreshes of idle shards


class ShardSampler:
    """Ray actor: samples an env node's replay shard (attached by name) for remote learners."""

    def __init__(self, replay_name: str, board_name: str, seed: int) -> None:
        import rtcore

        self.replay = rtcore.ReplayBuffer.attach(replay_name)
        self.board = rtcore.ObsBoard.attach(board_name)
        self.replay.seed(seed)
        self.sample_s = 0.0
        self.samples = 0

    def stats(self) -> dict[str, Any]:
        """Transitions in the shard, the node's env step, and the time spent sampling."""
        return {"size": len(self.replay), "steps": max(0, int(self.board.step)), "sample_s": self.sample_s,
                "samples": self.samples}

    def sample(self, batch_size: int, learn_on: str, beta: float | None) -> tuple[dict[str, np.ndarray] | None, dict]:
        """One batch (None while the shard holds fewer sampleable transitions than ``batch_size``)."""
        stats = {"size": len(self.replay), "steps": max(0, int(self.board.step))}
        if stats["size"] < batch_size:
            return None, stats
        t0 = time.perf_counter()
        try:
            b = self.replay.sample(batch_size, beta=beta if self.replay.prioritized else None, learn_on=learn_on)
        except ValueError:  # fewer sampleable transitions than stored ones (episode starts, n-step tails)
            return None, stats
        out = {k: np.array(getattr(b, k)) for k in BATCH_FIELDS}  # own arrays: the pool reuses its memory
        self.sample_s += time.perf_counter() - t0
        self.samples += 1
        return out, stats

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> int:
        return self.replay.update_priorities(index, priority)

    def close(self) -> None:
        self.replay.close()
        self.board.close()


class ShardBatches:
    """A learner's replay: batches from every live shard's sampler, round-robin, fetched ahead by a thread.

    ``shards``: ``[(node index, ShardSampler handle)]``; ``frame_stack``, ``obs_shape``, ``obs_dtype``: the
    shape of a batch (as the shards' ReplayBuffers have it). A fetcher thread (started by the first
    :meth:`sample`) keeps ``prefetch`` requests in flight per shard and ``ray.get``s them in turn (Ray pulls
    an object to this node only when it is asked for, so the transfer itself must be asked for ahead), and
    holds up to ``prefetch`` fetched batches for the learner: it moves the next batches while the learner
    computes on this one."""

    def __init__(self, shards: list[tuple[int, Any]], batch_size: int, learn_on: str, prioritized: bool,
                 frame_stack: int, obs_shape: tuple[int, ...], obs_dtype: str, prefetch: int = 2,
                 action_history: int = 0) -> None:
        import queue

        import ray

        self._ray = ray
        self._lost = lost_errors()
        self.shards = dict(shards)
        self.batch_size = int(batch_size)
        self.learn_on = learn_on
        self.prioritized = bool(prioritized)
        self.frame_stack = int(frame_stack)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.prefetch = int(prefetch)
        self.action_history = int(action_history)  # K of the shards' buffers (history width K + 1, or 0)
        self.inflight: dict[int, list[Any]] = {i: [] for i in self.shards}  # the fetcher's only
        self.sizes = {i: 0 for i in self.shards}
        self.steps = {i: 0 for i in self.shards}
        self.lost: list[int] = []
        self.beta: float | None = None
        self._turn = 0
        self._last_shard: int | None = None
        self._refreshed = 0.0
        self._lock = threading.Lock()  # shards, sizes, steps: written by the fetcher, read by the learner
        self._ready: Any = queue.Queue(maxsize=max(1, self.prefetch))
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.wait_s = 0.0

    # --- the ReplayBuffer face
    def seed(self, seed: int) -> None:
        """The shards' samplers are seeded where they are created; the round-robin start follows ``seed``."""
        self._turn = int(seed) % max(1, len(self.shards))

    def __len__(self) -> int:
        self._refresh()
        with self._lock:
            return int(sum(self.sizes.values()))

    def empty_batch(self, batch_size: int):
        from rtcore.shared.replay import ReplayBatch

        b = int(batch_size)
        stack = (b, self.frame_stack, *self.obs_shape)
        hist = (b, self.action_history + 1 if self.action_history else 0)
        return ReplayBatch(obs=np.zeros(stack, self.obs_dtype), next_obs=np.zeros(stack, self.obs_dtype),
                           action=np.zeros(b, np.int64), reward=np.zeros(b, np.float32), done=np.zeros(b, np.bool_),
                           discount=np.zeros(b, np.float32), was_default=np.zeros(b, np.bool_),
                           delay=np.zeros(b, np.int32), index=np.zeros(b, np.int64), weight=np.ones(b, np.float32),
                           action_history=np.zeros(hist, np.int64), next_action_history=np.zeros(hist, np.int64))

    def sample(self, batch_size: int, out: Any = None, beta: float | None = None, learn_on: str | None = None):
        """Fills ``out`` with the next fetched batch (round-robin over the shards); waits for one if none is
        ready. ``RuntimeError`` once every shard is lost."""
        import queue

        if batch_size != self.batch_size or (learn_on is not None and learn_on != self.learn_on):
            raise ValueError(f"this learner's shards sample batches of {self.batch_size} on {self.learn_on!r}, "
                             f"got {batch_size} on {learn_on!r}")
        self.beta = beta
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch, name="rtcore-batch-fetcher", daemon=True)
            self._thread.start()
        out = out if out is not None else self.empty_batch(batch_size)
        t0 = time.perf_counter()
        while True:
            try:
                item = self._ready.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the batch fetcher stopped") from None
        if isinstance(item, BaseException):
            self._ready.put(item)  # every later call says the same
            raise item
        i, arrays = item
        for k in BATCH_FIELDS:
            np.copyto(getattr(out, k), arrays[k])
        self._last_shard = i
        self.batches += 1
        self.wait_s += time.perf_counter() - t0
        return out

    def update_priorities(self, index: Any, priority: Any) -> int:
        """Sends the new priorities to the shard the last batch came from (no wait)."""
        with self._lock:
            s = self.shards.get(self._last_shard) if self._last_shard is not None else None
        if s is not None:
            s.update_priorities.remote(np.asarray(index), np.asarray(priority))
        return len(index)

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5.0)

    # --- the ObsBoard face (the learner's throttle: updates per env step, all env nodes together)
    @property
    def step(self) -> int:
        self._refresh()
        with self._lock:
            return int(sum(self.steps.values()))  # lost shards' last counts included

    def wait_step(self, step: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            if self.step > step:
                return self.step
        raise TimeoutError("no new env step")

    # --- the fetcher thread
    def _fetch(self) -> None:
        import queue

        while not self._closing.is_set():
            with self._lock:
                order = sorted(self.shards)
            if not order:
                self._ready.put(RuntimeError(f"every replay shard is lost (env nodes {self.lost})"))
                return
            i = order[self._turn % len(order)]
            self._turn += 1
            self._fill(i)
            ref = self.inflight[i].pop(0)
            try:
                arrays, stats = self._ray.get(ref)  # the transfer to this node happens here, ahead of the learner
            except self._lost:
                self._drop(i)
                continue
            with self._lock:
                self.sizes[i], self.steps[i] = stats["size"], stats["steps"]
            self._fill(i)
            if arrays is None:  # this shard is still filling: another one, or wait a little
                with self._lock:
                    filling = not any(self.sizes[j] >= self.batch_size for j in self.shards)
                if filling:
                    self._closing.wait(0.01)
                continue
            while not self._closing.is_set():
                try:
                    self._ready.put((i, arrays), timeout=0.2)  # blocks while the learner has enough ready
                    break
                except queue.Full:
                    pass

    def _fill(self, i: int) -> None:
        with self._lock:
            s = self.shards.get(i)
        if s is None:
            return
        q = self.inflight[i]
        beta = self.beta if self.prioritized else None
        while len(q) < self.prefetch:
            q.append(s.sample.remote(self.batch_size, self.learn_on, beta))

    def _drop(self, i: int) -> None:
        with self._lock:
            self.shards.pop(i, None)
            self.sizes.pop(i, None)
            self.lost.append(i)  # its last step count stays in the sum: the throttle counts the steps it gave
        self.inflight.pop(i, None)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._refreshed < STATS_EVERY:
            return
        self._refreshed = now
        with self._lock:
            refs = {i: s.stats.remote() for i, s in self.shards.items()}
        for i, ref in refs.items():
            try:
                st = self._ray.get(ref, timeout=5.0)
            except self._lost:
                self._drop(i)
                continue
            except self._ray.exceptions.GetTimeoutError:
                continue
            with self._lock:
                if i in self.shards:
                    self.sizes[i], self.steps[i] = st["size"], st["steps"]
