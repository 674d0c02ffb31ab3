"""Learners: M processes running DQN with round-robin asynchronous updates ("slow learners are fast").

Each learner loops::

    snapshot the newest parameters -> sample a batch straight into (pinned) tensors
    -> gradient of the DQN loss at the snapshot -> wait for its turn (rtcore.Turnstile)
    -> apply the gradient to the NEWEST parameters with the shared Adam state -> publish -> pass the turn

so updates are applied one at a time, in a fixed order, each computed on parameters at most M - 1
versions old. The optimizer state (Adam's moments and step count) and the target network live in
shared memory; every learner applies with the same moments, as one optimizer would. Only the turn
holder writes them.

DQN here: Huber loss, n-step targets from the replay buffer (``reward`` is the discounted n-step sum,
``discount`` is gamma^k and 0 after a termination), optional double DQN, a target network hard-updated
every ``target_update`` applied updates (counted over all learners), Adam, global-norm gradient
clipping.

``sequential_main`` is the paper's sequential baseline (``inflearn`` / ``learninf``): one process acts
and learns in turn while the environment keeps running.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rtcore.errors import SlotError
from rtcore.metrics import Control, LearnerCol, Telemetry, WorkerCol

__all__ = [
    "LearnerConfig",
    "SharedAdam",
    "DQNLearner",
    "UpdateInfo",
    "dqn_loss",
    "LearnerSpec",
    "learner_main",
    "SequentialSpec",
    "sequential_main",
    "bind_flat",
    "measure_updates_per_second",
]


@dataclass
class LearnerConfig:
    """DQN hyper-parameters (see :class:`rtcore.RunConfig` for what each means)."""

    batch_size: int = 32
    lr: float = 1e-4
    adam_eps: float = 1.5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    double_dqn: bool = True
    target_update: int = 2000
    max_grad_norm: float = 10.0
    turn_timeout: float = 0.05


def bind_flat(module: Any, device: Any = "cpu"):
    """Gives ``module`` one contiguous float32 parameter tensor and makes every parameter a view of it.

    Returns the flat tensor (``module.parameters()`` order, the ParamStore's order), so loading a
    version is one copy and the gradient can be gathered in the same layout.
    """
    import torch

    params = list(module.parameters())
    numel = sum(p.numel() for p in params)
    flat = torch.empty(numel, dtype=torch.float32, device=device)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = flat[offset:offset + n].view(p.shape)
            offset += n
    return flat


def dqn_loss(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
             double_dqn: bool = True):
    """Huber loss of ``Q(obs, action)`` against ``reward + discount * Q_target(next_obs, a*)``.

    ``a*`` is ``argmax_a Q_target(next_obs, a)``, or ``argmax_a Q(next_obs, a)`` with double DQN.
    ``discount`` is gamma^k for an n-step transition and 0 after a termination. Returns
    ``(loss, q_taken)`` with ``q_taken`` detached.
    """
    import torch
    import torch.nn.functional as F

    q = online(obs)
    q_taken = q.gather(1, action.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next_target = target(next_obs)
        if double_dqn:
            best = online(next_obs).argmax(dim=1, keepdim=True)
        else:
            best = q_next_target.argmax(dim=1, keepdim=True)
        q_next = q_next_target.gather(1, best).squeeze(1)
        y = reward + discount * q_next
    loss = F.smooth_l1_loss(q_taken, y)
    return loss, q_taken.detach()


class SharedAdam:
    """Adam (Kingma & Ba) whose moments and step count live in shared memory.

    ``moments`` is a float32 array of shape ``(2, numel)`` (first and second moment), ``control`` the
    run's int64 control array (slot ``Control.OPT_STEP`` is the step count). Every learner applies
    with the same state, one at a time (the caller holds the turn). Numerically identical to
    ``torch.optim.Adam`` without weight decay or amsgrad.
    """

    def __init__(self, moments: np.ndarray, control: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        if moments.ndim != 2 or moments.shape[0] != 2 or moments.dtype != np.float32:
            raise ValueError(f"moments has shape {moments.shape} and dtype {moments.dtype}, expected (2, numel) float32")
        self.m = torch.from_numpy(moments[0])
        self.v = torch.from_numpy(moments[1])
        self.control = control
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self._denom = torch.empty_like(self.v)

    @property
    def step_count(self) -> int:
        return int(self.control[Control.OPT_STEP])

    def step(self, param: Any, grad: Any) -> None:
        """``param -= lr * m_hat / (sqrt(v_hat) + eps)`` in place, with ``grad``; both flat float32 CPU tensors."""
        import torch

        b1, b2 = self.betas
        t = int(self.control[Control.OPT_STEP]) + 1
        self.m.mul_(b1).add_(grad, alpha=1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        torch.sqrt(self.v, out=self._denom)
        self._denom.div_(math.sqrt(bc2)).add_(self.eps)
        param.addcdiv_(self.m, self._denom, value=-self.lr / bc1)
        self.control[Control.OPT_STEP] = t


@dataclass
class UpdateInfo:
    """What one update did."""

    version: int          # parameter version it published
    snapshot_version: int  # version its gradient was computed at
    loss: float
    q_mean: float
    grad_norm: float
    sample_s: float
    grad_s: float
    wait_s: float
    apply_s: float


class DQNLearner:
    """One learner: samples, computes gradients at its snapshot, applies them in its turn.

    ``online`` is an eager model (built from the run's spec) on ``device``; the target network is a
    deep copy refreshed from the shared target array. ``turnstile`` may be None for a lone learner (the
    sequential agent): it then applies without waiting.
    """

    def __init__(self, online: Any, *, params: Any, replay: Any, moments: np.ndarray, target_params: np.ndarray,
                 control: np.ndarray, config: LearnerConfig, device: str = "cpu", turnstile: Any = None,
                 learner: int = 0, stats: np.ndarray | None = None, seed: int | None = None) -> None:
        import copy

        import torch

        self.cfg = config
        self.device = torch.device(device)
        self.params = params
        self.replay = replay
        if seed is not None:
            replay.seed(seed)
        self.turnstile = turnstile
        self.learner = learner
        self.control = control
        self.stats = stats
        self.online = online.to(self.device).train()
        self.target = copy.deepcopy(online).to(self.device).eval()
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.flat = bind_flat(self.online, self.device)
        self.target_flat = bind_flat(self.target, self.device)
        self.numel = self.flat.numel()
        if params.numel != self.numel:
            raise ValueError(f"ParamStore holds {params.numel} parameters, the learner's model has {self.numel}")
        if target_params.shape != (self.numel,) or target_params.dtype != np.float32:
            raise ValueError(f"target_params has shape {target_params.shape} and dtype {target_params.dtype}, "
                             f"expected ({self.numel},) float32")
        self.shared_target = torch.from_numpy(target_params)
        self.adam = SharedAdam(moments, control, config.lr, config.betas, config.adam_eps)
        self._params = list(self.online.parameters())
        self._grad = torch.empty(self.numel, dtype=torch.float32)  # host: the apply happens on shared host memory
        self._work = torch.empty(self.numel, dtype=torch.float32)
        self._target_version = -1
        self.snapshot_version = -1
        # the batch: sampled straight into these arrays (pinned when the learner is on CUDA)
        empty = replay.empty_batch(config.batch_size)
        self._np_batch = empty
        if self.device.type == "cuda":
            pinned = {k: torch.from_numpy(np.asarray(v)).pin_memory() for k, v in _batch_items(empty)}
            self._np_batch = _replace_batch(empty, {k: t.numpy() for k, t in pinned.items()})
            self._host = pinned
        else:
            self._host = {k: torch.from_numpy(np.asarray(v)) for k, v in _batch_items(empty)}

    # --- the steps of one update
    def snapshot(self) -> int:
        """Loads the newest published parameters into the local online network; returns their version."""
        import torch

        with self.params.read() as (version, view):
            self.flat.copy_(torch.from_numpy(view), non_blocking=False)
        self.snapshot_version = int(version)
        return self.snapshot_version

    def sample(self) -> dict[str, Any]:
        """Samples a batch into the preallocated arrays; returns it as tensors on the learner's device."""
        self.replay.sample(self.cfg.batch_size, out=self._np_batch)
        if self.device.type == "cuda":
            return {k: t.to(self.device, non_blocking=True) for k, t in self._host.items()}
        return self._host

    def gradient(self, batch: dict[str, Any]) -> tuple[float, float, float]:
        """Fills the flat gradient of the DQN loss at the snapshot; returns (loss, mean Q, grad norm)."""
        import torch

        for p in self._params:
            p.grad = None
        loss, q = dqn_loss(self.online, self.target, batch["obs"], batch["action"], batch["reward"],
                           batch["discount"], batch["next_obs"], self.cfg.double_dqn)
        loss.backward()
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                 for p in self._params]
        if self.device.type == "cpu":
            torch.cat(grads, out=self._grad)
        else:
            self._grad.copy_(torch.cat(grads))  # one device-to-host copy
        norm = float(torch.linalg.vector_norm(self._grad))
        if self.cfg.max_grad_norm > 0 and norm > self.cfg.max_grad_norm:
            self._grad.mul_(self.cfg.max_grad_norm / (norm + 1e-6))
        return float(loss.detach()), float(q.mean()), norm

    def apply(self) -> int:
        """Applies the gradient to the newest parameters in this learner's turn; returns the new version.

        Also refreshes the shared target network every ``target_update`` updates and picks up a new
        target, all while holding the turn (so no one writes the shared state at the same time).
        """
        import torch

        with self.params.read() as (_, view):
            self._work.copy_(torch.from_numpy(view))
        self.adam.step(self._work, self._grad)
        # Only the turn holder publishes, and the runner sizes the store at readers + 2 buffers, so a
        # publish is never skipped; the timeout turns a broken invariant into an error, not a lost update.
        version = int(self.params.publish(self._work.numpy(), timeout=5.0))
        if version < 0:
            raise RuntimeError(f"learner {self.learner}: could not publish parameters within 5 s "
                               f"(store stats: {self.params.stats()})")
        updates = int(self.control[Control.UPDATES]) + 1
        self.control[Control.UPDATES] = updates
        if updates % self.cfg.target_update == 0:
            self.shared_target.copy_(self._work)
            self.control[Control.TARGET_VERSION] += 1
        self._sync_target()
        return version

    def _sync_target(self) -> None:
        tv = int(self.control[Control.TARGET_VERSION])
        if tv != self._target_version:
            self.target_flat.copy_(self.shared_target)
            self._target_version = tv

    def _wait_turn(self, should_stop: Callable[[], bool]) -> bool:
        if self.turnstile is None:
            return True
        while True:
            try:
                return self.turnstile.wait_turn(self._slot, self.cfg.turn_timeout) >= 0  # -1: stopped
            except TimeoutError:
                if self.stats is not None:
                    self.stats[LearnerCol.HEARTBEAT] = time.monotonic()
                if should_stop():
                    return False

    def join(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Joins the turnstile and takes the target network in a first turn. False if told to stop first."""
        if self.turnstile is not None:
            self._slot = join_slot(self.turnstile.join, self.learner, self.turnstile.heartbeat_timeout + 5.0, should_stop)
            if self._slot is None:
                return False
        if not self._wait_turn(should_stop):
            return False
        try:
            self._sync_target()
        finally:
            if self.turnstile is not None:
                self.turnstile.pass_turn(self._slot)
        return True

    def leave(self) -> None:
        if self.turnstile is not None:
            try:
                self.turnstile.leave(self._slot)
            except Exception:
                pass

    def warmup(self) -> None:
        """One gradient on the (zeroed) batch arrays, applied nowhere: the first backward pass allocates
        its working memory here, before the env starts, instead of in the middle of a realtime run."""
        self.gradient(self._host if self.device.type == "cpu" else
                      {k: t.to(self.device) for k, t in self._host.items()})

    def update(self, should_stop: Callable[[], bool] = lambda: False) -> UpdateInfo | None:
        """One full update; None when told to stop while waiting for the turn."""
        t0 = time.monotonic()
        self.snapshot()
        batch = self.sample()
        t1 = time.monotonic()
        loss, q_mean, norm = self.gradient(batch)
        t2 = time.monotonic()
        if not self._wait_turn(should_stop):
            return None
        t3 = time.monotonic()
        try:
            version = self.apply()
        finally:
            if self.turnstile is not None:
                self.turnstile.pass_turn(self._slot)
        t4 = time.monotonic()
        info = UpdateInfo(version, self.snapshot_version, loss, q_mean, norm, t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        if self.stats is not None:
            s = self.stats
            s[LearnerCol.UPDATES] += 1
            s[LearnerCol.SAMPLE_S] += info.sample_s
            s[LearnerCol.GRAD_S] += info.grad_s
            s[LearnerCol.WAIT_S] += info.wait_s
            s[LearnerCol.APPLY_S] += info.apply_s
            s[LearnerCol.LOSS] = loss
            s[LearnerCol.Q_MEAN] = q_mean
            s[LearnerCol.GRAD_NORM] = norm
            s[LearnerCol.VERSION] = version
            s[LearnerCol.STALENESS] += max(0, version - 1 - self.snapshot_version)
            s[LearnerCol.HEARTBEAT] = t4
        return info


def join_slot(join: Callable[[int], int], slot: int, timeout: float, should_stop: Callable[[], bool]) -> int | None:
    """Joins ``slot`` of a schedule or turnstile, waiting while it still counts as taken.

    A respawned process takes the slot of the one that died; the slot frees once the dead process's
    heartbeat is older than the timeout (only the process that joined can leave). None if told to stop.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return join(slot)
        except SlotError:  # still held by the dead process until its heartbeat goes stale
            if time.monotonic() > deadline:
                raise
            if should_stop():
                return None
            time.sleep(0.05)


def _heartbeat_thread(turnstile: Any, slot: int, tel: Telemetry, period: float) -> None:
    """Beats for this learner process while it lives, also through a long gradient computation."""
    import threading

    def beat() -> None:
        while not tel.stopping:
            try:
                turnstile.heartbeat(slot)
            except SlotError:  # not joined yet, or dropped: the main thread's next call says so
                pass
            time.sleep(period)

    threading.Thread(target=beat, name="rtcore-learner-heartbeat", daemon=True).start()


def _batch_items(batch: Any) -> list[tuple[str, Any]]:
    keys = ("obs", "next_obs", "action", "reward", "done", "discount")
    return [(k, getattr(batch, k)) for k in keys]


def _replace_batch(batch: Any, arrays: dict[str, np.ndarray]) -> Any:
    if hasattr(batch, "_replace"):
        return batch._replace(**arrays)
    import dataclasses

    return dataclasses.replace(batch, **arrays)


# ---------------------------------------------------------------------- processes
@dataclass
class LearnerSpec:
    """Everything a learner process gets (shared objects pickle as their segment names)."""

    learner: int
    model_spec: str
    in_frames: int
    n_actions: int
    config: LearnerConfig
    device: str
    threads: int
    nice: int
    learning_starts: int
    updates_per_step: float
    params: Any
    replay: Any
    turnstile: Any
    moments: Any        # SharedArray (2, numel) float32
    target_params: Any  # SharedArray (numel,) float32
    telemetry: Telemetry
    obs_board: Any
    seed: int


def _wait_for_data(replay: Any, needed: int, tel: Telemetry, beat: np.ndarray) -> bool:
    while len(replay) < needed:
        if tel.stopping:
            return False
        beat[LearnerCol.HEARTBEAT] = time.monotonic()
        time.sleep(0.02)
    return True


def _throttle(updates_per_step: float, tel: Telemetry, obs_board: Any, beat: np.ndarray, turnstile: Any = None,
              slot: int = 0) -> bool:
    """Waits while the learners are ahead of ``updates_per_step`` updates per env step."""
    if updates_per_step <= 0:
        return True
    while int(tel.control[Control.UPDATES]) >= updates_per_step * max(1, obs_board.step):
        if tel.stopping:
            return False
        beat[LearnerCol.HEARTBEAT] = time.monotonic()
        if turnstile is not None:
            turnstile.heartbeat(slot)
        try:
            obs_board.wait_step(obs_board.step, 0.05)
        except TimeoutError:
            pass
    return True


def learner_main(spec: LearnerSpec) -> None:
    """Entry point of a learner process."""
    from rtcore.inference import _child_setup

    _child_setup(spec.threads)
    if spec.nice:
        os.nice(spec.nice)  # acting first: learning must never take the CPU from the env and the workers
    import torch

    from rtcore.models import build_model

    torch.manual_seed(spec.seed)
    tel = spec.telemetry
    row = tel.learners[spec.learner]
    row[LearnerCol.PID] = os.getpid()
    row[LearnerCol.STARTS] += 1
    row[LearnerCol.READY] = 0
    row[LearnerCol.HEARTBEAT] = time.monotonic()
    model = build_model(spec.model_spec, spec.in_frames, spec.n_actions)
    learner = DQNLearner(model, params=spec.params, replay=spec.replay, moments=spec.moments.array,
                         target_params=spec.target_params.array, control=tel.control, config=spec.config,
                         device=spec.device, turnstile=spec.turnstile, learner=spec.learner, stats=row, seed=spec.seed)
    learner.warmup()
    row[LearnerCol.READY] = 1
    stop = lambda: tel.stopping  # noqa: E731
    try:
        if not _wait_for_data(spec.replay, spec.learning_starts, tel, row):
            return
        if not learner.join(stop):
            return
        if spec.turnstile is not None:
            _heartbeat_thread(spec.turnstile, learner._slot, tel, spec.turnstile.heartbeat_timeout / 4)
        while not tel.stopping:
            if not _throttle(spec.updates_per_step, tel, spec.obs_board, row, spec.turnstile, spec.learner):
                break
            if learner.update(stop) is None:
                break
    except Exception:
        traceback.print_exc()
        raise
    finally:
        learner.leave()


@dataclass
class SequentialSpec:
    """The sequential agent: one process, one actor and one learner (``order``: inflearn or learninf)."""

    order: str
    actor: Any          # rtcore.inference.ActorConfig
    learner: LearnerSpec
    action_board: Any
    frame_stack: int
    obs_shape: tuple[int, ...]
    realtime: bool = False


def sequential_main(spec: SequentialSpec) -> None:
    """Entry point of the sequential baseline: act, learn, act, learn, ... while the env keeps running."""
    from rtcore.inference import Actor, _child_setup

    ls = spec.learner
    _child_setup(ls.threads)
    if spec.realtime:
        from rtcore import _core
        from rtcore.inference import WORKER_RT_PRIORITY

        status = _core.apply_realtime(WORKER_RT_PRIORITY)
        if not status.startswith("on"):
            print(f"rtcore: sequential agent: realtime scheduling: {status}", file=sys.stderr, flush=True)
    import torch

    from rtcore.models import build_model

    torch.manual_seed(ls.seed)
    tel = ls.telemetry
    wrow = tel.workers[0]
    lrow = tel.learners[0]
    for r, col_pid, col_beat in ((wrow, WorkerCol.PID, WorkerCol.HEARTBEAT), (lrow, LearnerCol.PID, LearnerCol.HEARTBEAT)):
        r[col_pid] = os.getpid()
        r[col_beat] = time.monotonic()
    actor = Actor(spec.actor, ls.obs_board, ls.params, spec.frame_stack, spec.obs_shape)
    actor.warmup()
    learner = DQNLearner(build_model(ls.model_spec, ls.in_frames, ls.n_actions), params=ls.params, replay=ls.replay,
                         moments=ls.moments.array, target_params=ls.target_params.array, control=tel.control,
                         config=ls.config, device=ls.device, turnstile=None, learner=0, stats=lrow, seed=ls.seed)
    learner.join()
    learner.warmup()
    from rtcore.inference import quiet_gc

    quiet_gc()
    wrow[WorkerCol.STARTS] += 1  # ready
    lrow[LearnerCol.STARTS] += 1
    if not actor.wait_first_frame(lambda: tel.stopping):
        return
    learning = False

    last_step = -1

    def act() -> None:
        # sequential interaction: one action per new observation (the agent waits for the env when it
        # is faster than it, and falls behind by whole steps when it is slower)
        nonlocal last_step
        t0 = time.monotonic()
        while ls.obs_board.step <= last_step and not tel.stopping:
            try:
                ls.obs_board.wait_step(last_step, 0.05)
            except TimeoutError:
                pass
        wrow[WorkerCol.WAIT_S] += time.monotonic() - t0
        action, step, _, _ = actor.act(wrow)
        last_step = step
        t1 = time.monotonic()
        spec.action_board.post(action, step, 0)
        t2 = time.monotonic()
        wrow[WorkerCol.POST_S] += t2 - t1
        wrow[WorkerCol.TURNS] += 1
        wrow[WorkerCol.HEARTBEAT] = t2
        tel.record_post(0, t2)

    def learn() -> None:
        nonlocal learning
        if not learning:
            learning = len(ls.replay) >= ls.learning_starts
        if learning:
            learner.update()
        lrow[LearnerCol.HEARTBEAT] = time.monotonic()

    steps = (act, learn) if spec.order == "inflearn" else (learn, act)
    try:
        while not tel.stopping:
            for fn in steps:
                fn()
    except Exception:
        traceback.print_exc()
        raise


# ---------------------------------------------------------------------- measurement
def measure_updates_per_second(model_spec: str, learners: int, seconds: float = 5.0, *, batch_size: int = 32,
                               frame_stack: int = 4, n_actions: int = 6, capacity: int = 2_000, device: str = "cpu",
                               threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Runs ``learners`` learner processes on a replay buffer of random frames for ``seconds``.

    Returns ``updates`` and ``updates_per_s`` (all learners together, timed from the first applied
    update, so process start-up is not counted), and ``staleness`` (mean versions between a
    gradient's snapshot and its application: M - 1 when the turns are fair).
    """
    import multiprocessing as mp

    import rtcore
    from rtcore.models import build_model
    from rtcore.shared_array import SharedArray

    if learners < 1:
        raise ValueError(f"learners must be >= 1, got {learners}")
    rng = np.random.default_rng(seed)
    shape = (84, 84)
    objs: list[Any] = []
    procs: list[Any] = []
    try:
        replay = rtcore.ReplayBuffer(capacity, shape, frame_stack=frame_stack, n_step=3)
        objs.append(replay)
        for i in range(capacity):
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            end = (i + 1) % 500 == 0
            replay.add(0, frame, int(rng.integers(n_actions)), float(rng.normal()), end, False,
                       next_obs=frame if end else None)
        import torch

        torch.manual_seed(seed)
        model = build_model(model_spec, frame_stack, n_actions)
        flat = bind_flat(model).numpy().copy()
        params = rtcore.ParamStore(flat.size)
        objs.append(params)
        params.publish(flat)
        moments = SharedArray((2, flat.size), "float32")
        objs.append(moments)
        target = SharedArray((flat.size,), "float32")
        objs.append(target)
        target.array[:] = flat
        tel = Telemetry(1, learners)
        objs.append(tel)
        turnstile = rtcore.Turnstile(learners)
        objs.append(turnstile)
        ctx = mp.get_context("spawn")
        for j in range(learners):
            spec = LearnerSpec(learner=j, model_spec=model_spec, in_frames=frame_stack, n_actions=n_actions,
                               config=LearnerConfig(batch_size=batch_size), device=device, threads=threads, nice=0,
                               learning_starts=batch_size, updates_per_step=0.0, params=params, replay=replay,
                               turnstile=turnstile, moments=moments, target_params=target, telemetry=tel,
                               obs_board=None, seed=seed + j)
            p = ctx.Process(target=learner_main, args=(spec,), daemon=True)
            p.start()
            procs.append(p)
        deadline = time.monotonic() + 120
        while int(tel.control[Control.UPDATES]) < learners:  # every learner has loaded and is updating
            if time.monotonic() > deadline or any(p.exitcode is not None for p in procs):
                raise RuntimeError("learners did not start")
            time.sleep(0.01)
        u0, t0 = int(tel.control[Control.UPDATES]), time.monotonic()
        time.sleep(seconds)
        u1, t1 = int(tel.control[Control.UPDATES]), time.monotonic()
        tel.control[Control.STOP] = 1
        L = tel.learners[:learners]
        n = L[:, LearnerCol.UPDATES].sum()
        return {"learners": learners, "updates": u1 - u0, "updates_per_s": (u1 - u0) / (t1 - t0),
                "staleness": float(L[:, LearnerCol.STALENESS].sum() / max(1, n)),
                "grad_ms": 1e3 * float(L[:, LearnerCol.GRAD_S].sum() / max(1, n)),
                "apply_ms": 1e3 * float(L[:, LearnerCol.APPLY_S].sum() / max(1, n))}
    finally:
        for o in objs:
            if isinstance(o, Telemetry):
                o.control[Control.STOP] = 1
        for p in procs:
            p.join(5.0)
            if p.exitcode is None:
                p.kill()
                p.join(5.0)
        for o in reversed(objs):
            o.close()
