"""Inference workers: N processes that take turns acting, staggered so an action is ready at every tick.

Each worker is a spawned process that loads the run's model (TorchScript by default) on its device,
with one CPU thread, and runs the stagger schedule's loop (the paper's Algorithm 1 or 2)::

    join -> [ wait_turn -> pick up the newest parameters -> read the newest frame stack
              -> forward pass -> epsilon-greedy -> report the time it took -> wait_publish -> post ]*

Parameters: the worker pins the newest complete version in the :class:`rtcore.ParamStore` for the
whole forward pass, so it never runs a mix of two versions. On CPU the model's parameters are views
of the pinned shared buffer (picking up a version copies nothing); on CUDA the pinned buffer is copied
host-to-device once per new version. With ``backend="frozen"`` (CPU) the worker runs a frozen, oneDNN-optimized
copy of the model that a thread keeps near the newest version (:mod:`rtcore.models.frozen`): nothing is pinned
in the turn, and the action's parameters trail the newest by at most one refresh and one turn.

With an action history (``--action-history K``) the model takes ``forward(obs, hist)``: the worker reads
the history with the stack (:meth:`rtcore.ObsBoard.read` with ``history=``, the pending slot looked up on
the ActionBoard) straight into a second preallocated input tensor.

``inference_delay`` adds a fixed wait after every forward pass. It EMULATES a larger model's latency on
small hardware (the run reports it); the schedule sees the longer inference time, as it would with a
bigger network.

The time spent reading, inferring, posting, waiting and picking up parameters is summed into the
worker's row of :class:`rtcore.agent.metrics.Telemetry`; the runner turns it into metrics.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rtcore.agent._proc import WORKER_RT_PRIORITY, apply_realtime, child_setup, join_slot, quiet_gc
from rtcore.agent.config import epsilon_at
from rtcore.agent.telemetry import Control, Telemetry, WorkerCol
from rtcore.shared.timer import monotonic, sleep_until

__all__ = ["Actor", "ActorConfig", "WorkerSpec", "take_turns", "worker_main"]

@dataclass
class ActorConfig:
    """What an actor needs besides its shared objects (picklable)."""

    model_path: str
    device: str
    backend: str
    n_actions: int
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int
    inference_delay: float
    seed: int
    action_history: int = 0


class Actor:
    """Reads the newest observation, runs the model on the newest parameters, picks an epsilon-greedy action.

    Used by the inference workers (staggered mode) and the sequential agent. Buffers are allocated once;
    parameters are picked up through :class:`rtcore.shared.params.ParamReader` (CPU: zero-copy views of the
    pinned shared buffer; CUDA: one host-to-device copy per new version, prefetched between turns).
    """

    def __init__(self, cfg: ActorConfig, obs_board: Any, params: Any, frame_stack: int, obs_shape: tuple[int, ...],
                 obs_dtype: Any = np.uint8, mirror: Any = None, control: np.ndarray | None = None,
                 action_board: Any = None) -> None:
        import torch

        from rtcore.models.export import load_for_inference
        from rtcore.shared.params import ParamReader

        self.cfg = cfg
        self.obs_board = obs_board
        self.device = torch.device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)
        frozen = cfg.backend == "frozen"
        if frozen and self.device.type != "cpu":
            raise ValueError(f"backend 'frozen' runs on the CPU only, got device {cfg.device!r}")
        self.module = load_for_inference(cfg.model_path, self.device, backend="script" if frozen else cfg.backend)
        k = int(cfg.action_history)
        # an exported program keeps no attributes: its inputs are checked by the first forward pass (warmup)
        model_k = int(getattr(self.module, "action_history", k if cfg.backend == "export" else 0))
        board_k = int(getattr(obs_board, "action_history", 0))
        if model_k != k or board_k != k:
            raise ValueError(f"action_history: the actor is configured with {k}, its model takes {model_k} and its "
                             f"ObsBoard keeps {board_k}; build all three with the same K")
        self.action_board = action_board
        self.frozen: Any = None  # backend 'frozen': the rtcore.models.frozen.FrozenFollower the actor runs
        self.reader: Any = None if frozen else ParamReader(params, self.module, mirror)
        # the emulated latency can change at run time: the runner writes it into the control array
        self._delay_ns = control[Control.INFERENCE_DELAY_NS:Control.INFERENCE_DELAY_NS + 1] if control is not None else None
        from rtcore.models.noisy import noise_resetter

        self._reset_noise = noise_resetter(self.module)  # noisy nets: new noise for every new parameter version
        self._noise_version = -1
        # inputs: host tensors the boards write into, and (CUDA) their device copies; one tensor on the CPU
        self._host, self._x = self._staged(torch.zeros((1, frame_stack, *obs_shape),
                                                       dtype=getattr(torch, np.dtype(obs_dtype).name)))
        self.stack = self._host.numpy()[0]  # the ObsBoard copies the frame stack straight into the input tensor
        self._h = self._hhost = None
        self.history: np.ndarray | None = None  # the action history of the last read (K + 1 entries)
        if k:
            self._hhost, self._h = self._staged(torch.zeros((1, k + 1), dtype=torch.int64))
            self.history = self._hhost.numpy()[0]
        self.last_infer_s = 0.0
        if frozen:
            from rtcore.models.frozen import FrozenFollower

            self.frozen = FrozenFollower(params, self.module, self._example(torch, obs_dtype), seed=cfg.seed)
            self.frozen.start()
            self._refreshes_seen = (0, 0.0)
            self.module = None  # the scripted module was the template: the two frozen copies are what runs

    def _staged(self, host: Any) -> tuple[Any, Any]:
        """``(host, input)``: on CUDA a page-locked host tensor and its device twin, else the tensor twice."""
        if self.device.type != "cuda":
            return host, host
        host = host.pin_memory()
        return host, host.new_empty(host.shape, device=self.device)

    def _example(self, torch: Any, obs_dtype: Any) -> tuple[Any, ...]:
        """Seeded inputs of the actor's shapes (the frozen module's build check)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        if np.dtype(obs_dtype) == np.uint8:
            x = torch.randint(0, 256, tuple(self._host.shape), dtype=torch.uint8, generator=g)
        else:
            x = torch.randn(tuple(self._host.shape), generator=g).to(self._host.dtype)
        if self._hhost is None:
            return (x,)
        return (x, torch.randint(-1, int(self.cfg.n_actions), tuple(self._hhost.shape), generator=g))

    @property
    def inference_delay(self) -> float:
        """Emulated extra latency per pass, seconds (the run's control cell when there is one)."""
        return self.cfg.inference_delay if self._delay_ns is None else float(self._delay_ns[0]) * 1e-9

    @property
    def version(self) -> int:
        """Parameter version of the last action."""
        return self.frozen.version if self.frozen is not None else self.reader.version

    def act(self, timing: np.ndarray | None = None) -> tuple[int, int, bool, float]:
        """One action: ``(action, obs_step, random, epsilon)``; adds its times to a worker row when given.

        The parameter version is fixed for the whole forward pass (never a mix of two versions).
        """
        import torch

        t0 = monotonic()
        lag = 0
        if self.frozen is not None:  # swap in the copy the refresh thread finished, if any; nothing to pin
            lag = self.frozen.turn()
            turn: Any = contextlib.nullcontext()
        else:
            turn = self.reader.pinned()
        with turn:
            t1 = monotonic()
            if self.history is None:
                _, step = self.obs_board.read(out=self.stack)
            else:
                _, step = self.obs_board.read(out=self.stack, history=self.history, actions=self.action_board)
            if self._reset_noise is not None and self.reader.version != self._noise_version:
                self._reset_noise()
                self._noise_version = self.reader.version
            t2 = monotonic()
            action = self._forward(torch)
            delay = self.inference_delay
            if delay > 0:  # emulated extra latency, on top of the real forward pass
                sleep_until(monotonic() + delay)
            t3 = monotonic()
        if self.reader is not None:
            self.reader.prefetch()  # CUDA: copy a newer version while waiting for the next turn
        eps = epsilon_at(int(step), self.cfg.epsilon_start, self.cfg.epsilon_end, self.cfg.epsilon_decay_steps)
        rand = bool(self.rng.random() < eps)
        if rand:
            action = int(self.rng.integers(self.cfg.n_actions))
        self.last_infer_s = t3 - t2
        if timing is not None:
            timing[WorkerCol.PICKUP_S] += t1 - t0
            timing[WorkerCol.READ_S] += t2 - t1
            timing[WorkerCol.INFER_S] += t3 - t2
            if t3 - t2 > timing[WorkerCol.INFER_MAX]:
                timing[WorkerCol.INFER_MAX] = t3 - t2
            version = self.version
            if version != timing[WorkerCol.VERSION]:
                timing[WorkerCol.PICKUPS] += 1
                timing[WorkerCol.VERSION] = version
            if self.frozen is not None:
                timing[WorkerCol.VERSION_LAG] += lag
                n, secs = self.frozen.refreshes, self.frozen.refresh_s  # the row outlives a respawned worker: add
                timing[WorkerCol.REFRESHES] += n - self._refreshes_seen[0]
                timing[WorkerCol.REFRESH_S] += secs - self._refreshes_seen[1]
                self._refreshes_seen = (n, secs)
            timing[WorkerCol.RANDOM] += rand
            timing[WorkerCol.EPSILON] = eps
            timing[WorkerCol.LAST_STEP] = step
        return action, int(step), rand, eps

    def warmup(self, passes: int = 3) -> None:
        """A few forward passes on the newest parameters, no board read (TorchScript profiles its first runs)."""
        import torch

        for _ in range(passes):
            with self.reader.pinned() if self.frozen is None else contextlib.nullcontext():
                self._forward(torch)

    def wait_first_frame(self, should_stop: Callable[[], bool], poll: float = 0.05) -> bool:
        """Blocks until the env has published a frame; False if told to stop first."""
        while self.obs_board.published < 1:
            if should_stop():
                return False
            try:
                self.obs_board.wait_step(-1, poll)
            except TimeoutError:
                pass
        return True

    def _forward(self, torch: Any) -> int:
        # The profiling executor re-specialises and recompiles a scripted graph now and then (measured
        # here: ~470 ms passes in every worker at once, mid-run); the plain executor runs the same
        # graph as fast for these models (impala k=1: 3.1 vs 3.2 ms, k=7: 53.3 vs 53.4 ms) and never stalls.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            if self._x is not self._host:
                self._x.copy_(self._host, non_blocking=True)
                if self._h is not None:
                    self._h.copy_(self._hhost, non_blocking=True)
            module = self.module if self.frozen is None else self.frozen.module
            q = module(self._x) if self._h is None else module(self._x, self._h)
            return int(q.argmax(dim=1).item())  # .item() synchronises a CUDA stream

    def close(self) -> None:
        if self.frozen is not None:
            self.frozen.close()
        if self.reader is not None:
            self.reader.close()


@dataclass
class WorkerSpec:
    """Everything a worker process gets (shared objects pickle as their segment names)."""

    worker: int
    actor: ActorConfig
    obs_board: Any
    action_board: Any
    schedule: Any
    params: Any
    telemetry: Telemetry
    frame_stack: int
    obs_shape: tuple[int, ...]
    turn_timeout: float = 0.05
    realtime: bool = False
    obs_dtype: str = "uint8"
    mirror: Any = None  # the parameter versions on the worker's GPU (learners there write them), or None


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of an inference worker process."""
    child_setup(1)
    if spec.realtime:
        apply_realtime(WORKER_RT_PRIORITY, f"worker {spec.worker}")
    tel = spec.telemetry
    row = tel.workers[spec.worker]
    row[WorkerCol.PID] = os.getpid()
    row[WorkerCol.HEARTBEAT] = time.monotonic()
    actor = Actor(spec.actor, spec.obs_board, spec.params, spec.frame_stack, spec.obs_shape, spec.obs_dtype,
                  mirror=spec.mirror, control=tel.control, action_board=spec.action_board)
    actor.warmup()  # so the first timed turn is not TorchScript's profiling run
    quiet_gc()
    row[WorkerCol.STARTS] += 1  # ready: the runner starts the env when every worker is
    if not actor.wait_first_frame(lambda: tel.stopping):
        actor.close()
        return
    sched = spec.schedule
    w = join_slot(sched.join, spec.worker, sched.heartbeat_timeout + 2 * sched.tau_max + 5.0, lambda: tel.stopping)
    if w is None:
        actor.close()
        return

    def act() -> tuple[int, int]:
        action, step, _, _ = actor.act(row)
        return action, step

    def retired() -> bool:  # by elastic N: leave the schedule (the others re-stagger) and exit
        active = int(tel.control[Control.ACTIVE_WORKERS])
        return 0 < active <= spec.worker

    try:
        take_turns(sched, w, tel, spec.worker, act, spec.action_board.post, lambda: tel.stopping,
                   turn_timeout=spec.turn_timeout, retired=retired)
    except Exception:
        traceback.print_exc()
        raise
    finally:
        actor.close()


def take_turns(sched: Any, slot: int, tel: Telemetry, row_index: int, act: Callable[[], tuple[int, int] | None],
               post: Callable[[int, int, int], Any], stop: Callable[[], bool], *, turn_timeout: float = 0.05,
               retired: Callable[[], bool] | None = None) -> None:
    """The turn loop of one staggered worker, local (:func:`worker_main`) or remote (the relay of
    :mod:`rtcore.cluster.workers`): wait for the turn, ``act()`` -> ``(action, obs_step)`` (None: stop), report
    the pass to the schedule, wait for the publish instant, ``post(action, obs_step, slot)``. Heart-beats and
    sums the waits and posts into telemetry row ``row_index`` (``act`` adds its own times); leaves the
    schedule on the way out, however it ends."""
    row = tel.workers[row_index]
    try:
        while not stop():
            if retired is not None and retired():
                break
            now = time.monotonic()
            row[WorkerCol.HEARTBEAT] = now
            try:
                if not sched.wait_turn(slot, turn_timeout):
                    break  # the runner stopped the schedule
            except TimeoutError:
                row[WorkerCol.WAIT_S] += time.monotonic() - now
                continue  # (the wait heart-beats the schedule)
            t0 = time.monotonic()
            row[WorkerCol.WAIT_S] += t0 - now
            got = act()
            if got is None:
                break
            action, step = got
            t1 = time.monotonic()
            sched.report(slot, t1 - t0)
            try:
                if not sched.wait_publish(slot, max(1.0, 4 * sched.tau_max)):
                    break
            except TimeoutError:
                continue
            t2 = time.monotonic()
            post(action, step, slot)
            t3 = time.monotonic()
            row[WorkerCol.WAIT_S] += t2 - t1
            row[WorkerCol.POST_S] += t3 - t2
            row[WorkerCol.TURNS] += 1
            tel.record_post(row_index, t3)
    finally:
        try:
            sched.leave(slot)
        except Exception:
            pass
