"""DQN with round-robin asynchronous updates ("slow learners are fast"): the loss, the shared optimizer
and one learner's update loop.

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

Rainbow parts, each optional: a C51 distributional model (``atoms > 1`` in its spec; the categorical
cross-entropy loss against the projected target, :mod:`rtcore.models.distributional`), noisy layers
(new noise on the online and target networks before every gradient, as the authors' learner does
after every update), and prioritized replay: the batch's importance weights scale each transition's
loss, and right after the gradient the learner sets the sampled transitions' priorities to their
|TD error| (the C51 loss for a distributional model) + ``priority_eps`` with
``ReplayBuffer.update_priorities``, which any learner process may call at any time (no turn needed).
Beta anneals linearly from ``priority_beta`` to 1 over ``priority_beta_steps`` applied updates (0:
constant, as the authors' realtime learner). One departure from the authors' Rainbow: they add a
1-step loss to the n-step loss (from a second buffer); here the loss is the n-step one alone, as in
Hessel et al.'s Rainbow, since the replay buffer computes one n.

Length: the update is one piece (snapshot, sample, gradient, turn, apply to every replica, publish), and
the shared state it applies to (SharedAdam, the learner-state rows and replicas) is only used here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rtcore.agent._proc import join_slot
from rtcore.agent.optim import STATE_ROWS, TARGET, NonFiniteStep, SharedAdam, StepJournal, bank, new_learner_state
from rtcore.agent.telemetry import Control, LearnerCol
from rtcore.shared.params import bind_flat

__all__ = ["LearnerConfig", "SharedAdam", "DQNLearner", "UpdateInfo", "dqn_loss", "td_losses", "c51_losses",
           "beta_at", "new_learner_state"]


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
    learn_on: str = "applied"
    turn_timeout: float = 0.05
    prioritized: bool = False
    priority_beta: float = 0.6
    priority_beta_steps: int = 0
    priority_eps: float = 1e-6


def beta_at(updates: int, beta0: float, steps: int) -> float:
    """Importance-sampling exponent after ``updates`` applied updates: linear from ``beta0`` to 1 over
    ``steps`` updates; constant ``beta0`` when ``steps`` is 0."""
    if steps <= 0:
        return beta0
    return beta0 + (1.0 - beta0) * min(1.0, updates / steps)




def _q(net: Any, obs: Any, hist: Any) -> Any:
    """Q-values of a model with (``hist`` given: ``forward(obs, hist)``) or without an action history."""
    return net(obs) if hist is None else net(obs, hist)


def _log_dist(net: Any, obs: Any, hist: Any) -> Any:
    return net.log_dist(obs) if hist is None else net.log_dist(obs, hist)


def dqn_loss(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
             double_dqn: bool = True, hist: Any = None, next_hist: Any = None):
    """Huber loss of ``Q(obs, action)`` against ``reward + discount * Q_target(next_obs, a*)``.

    ``a*`` is ``argmax_a Q_target(next_obs, a)``, or ``argmax_a Q(next_obs, a)`` with double DQN.
    ``discount`` is gamma^k for an n-step transition and 0 after a termination. Returns
    ``(loss, q_taken)`` with ``q_taken`` detached. Models with an action history take ``hist`` (the
    input beside ``obs``) and ``next_hist`` (beside ``next_obs``): ``ReplayBatch.action_history`` and
    ``next_action_history``.
    """
    import torch
    import torch.nn.functional as F

    q = _q(online, obs, hist)
    q_taken = q.gather(1, action.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next_target = _q(target, next_obs, next_hist)
        if double_dqn:
            best = _q(online, next_obs, next_hist).argmax(dim=1, keepdim=True)
        else:
            best = q_next_target.argmax(dim=1, keepdim=True)
        q_next = q_next_target.gather(1, best).squeeze(1)
        y = reward + discount * q_next
    loss = F.smooth_l1_loss(q_taken, y)
    return loss, q_taken.detach()


def td_losses(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
              double_dqn: bool = True, hist: Any = None, next_hist: Any = None):
    """:func:`dqn_loss` per transition: ``(huber [B], q_taken [B] detached, |TD error| [B] detached)``."""
    import torch
    import torch.nn.functional as F

    q = _q(online, obs, hist)
    q_taken = q.gather(1, action.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next_target = _q(target, next_obs, next_hist)
        best = (_q(online, next_obs, next_hist) if double_dqn else q_next_target).argmax(dim=1, keepdim=True)
        y = reward + discount * q_next_target.gather(1, best).squeeze(1)
    losses = F.smooth_l1_loss(q_taken, y, reduction="none")
    return losses, q_taken.detach(), (q_taken.detach() - y).abs()


def c51_losses(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
               double_dqn: bool = True, hist: Any = None, next_hist: Any = None):
    """The categorical (C51) loss per transition: ``(cross-entropy [B], Q(obs, action) [B] detached,
    cross-entropy [B] detached)``. The target distribution is the target network's at ``next_obs`` for
    the action the online network (double) or the target network picks by expected value, projected
    from ``reward + discount * z`` onto the support (:func:`rtcore.models.distributional.project_distribution`).
    """
    import torch

    from rtcore.models.distributional import categorical_loss, project_distribution
    from rtcore.models.history import q_head

    support = q_head(online).support
    b = action.shape[0]
    rows = torch.arange(b, device=action.device)
    log_p = _log_dist(online, obs, hist)[rows, action.long()]  # [B, atoms]
    with torch.no_grad():
        next_probs_all = _log_dist(target, next_obs, next_hist).exp()  # [B, A, atoms]
        q_next = (_q(online, next_obs, next_hist) if double_dqn else (next_probs_all * support).sum(2))
        best = q_next.argmax(dim=1)
        m = project_distribution(next_probs_all[rows, best], reward.float(), discount.float(), support)
        q_taken = (log_p.detach().exp() * support).sum(1)
    losses = categorical_loss(log_p, m)
    return losses, q_taken, losses.detach()


class _Replica:
    """One copy of the learner state (two banks of master and moments, the target; see
    :mod:`rtcore.agent.optim`) on one device, and its parameter mirror."""

    def __init__(self, state: Any, mirror: Any, control: np.ndarray, config: LearnerConfig, numel: int) -> None:
        import torch

        if isinstance(state, np.ndarray):
            state = torch.from_numpy(state)
        if tuple(state.shape) != (STATE_ROWS, numel) or state.dtype != torch.float32:
            raise ValueError(f"learner state has shape {tuple(state.shape)} and dtype {state.dtype}, "
                             f"expected ({STATE_ROWS}, {numel}) float32")
        self.device = state.device
        self.state = state
        self.target = state[TARGET]
        self.adam = SharedAdam(state[1:3], control, config.lr, config.betas, config.adam_eps)
        self.mirror = mirror
        if mirror is not None and mirror.device != state.device:
            raise ValueError(f"parameter mirror is on {mirror.device}, its learner state on {state.device}")
        self.grad = None  # the gradient on this device, when the learner computes it elsewhere

    def sync(self) -> None:
        """Waits for this process's kernels on the replica's device (before another process reads it)."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.current_stream(self.device).synchronize()


@dataclass
class UpdateInfo:
    """What one update did."""

    version: int          # parameter version it published (the newest one if its publish was skipped)
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
    deep copy refreshed from the shared target row. ``state`` is the shared learner state (master
    parameters and Adam moments in two banks, target: ``(7, numel)`` float32, see
    :func:`rtcore.agent.optim.new_learner_state`), or a list
    of replicas of it on several devices, all updated in each turn so they stay in step. ``mirrors``
    (optional, one per replica) are ``(params.buffers, numel)`` tensors on the replicas' devices that
    hold the published versions by buffer index (:func:`rtcore.shared.params.device_mirror`): readers on
    that device use them without a host copy. ``host`` (default: when there is no mirror) also writes each
    version into the store's host buffers, for CPU readers. ``turnstile`` may be None for a lone learner
    (the sequential agent): it then applies without waiting.
    """

    def __init__(self, online: Any, *, params: Any, replay: Any, state: Any, control: np.ndarray,
                 config: LearnerConfig, device: str = "cpu", turnstile: Any = None, learner: int = 0,
                 stats: np.ndarray | None = None, seed: int | None = None, mirrors: Any = None,
                 host: bool | None = None) -> None:
        import copy

        import torch

        self.cfg = config
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # compare equal to the replicas' devices
            self.device = torch.device("cuda", torch.cuda.current_device())
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
        from rtcore.models.history import q_head
        from rtcore.models.noisy import NoisyLinear

        self.distributional = int(getattr(q_head(online), "atoms", 1)) > 1
        self.action_history = int(getattr(online, "action_history", 0))
        if self.action_history != int(getattr(replay, "action_history", 0)):
            raise ValueError(f"the model takes an action history of {self.action_history}, the replay buffer gathers "
                             f"{int(getattr(replay, 'action_history', 0))}: build both with the same action_history")
        self.noisy = any(isinstance(m, NoisyLinear) for m in online.modules())
        if config.prioritized and not getattr(replay, "prioritized", False):
            raise ValueError("LearnerConfig.prioritized needs a prioritized ReplayBuffer (prioritized=True)")
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.flat = bind_flat(self.online, device=self.device)
        self.target_flat = bind_flat(self.target, device=self.device)
        self.numel = self.flat.numel()
        if params.numel != self.numel:
            raise ValueError(f"ParamStore holds {params.numel} parameters, the learner's model has {self.numel}")
        states = list(state) if isinstance(state, (list, tuple)) else [state]
        mirrors = list(mirrors) if isinstance(mirrors, (list, tuple)) else [mirrors] * len(states)
        if len(mirrors) != len(states):
            raise ValueError(f"{len(mirrors)} parameter mirrors for {len(states)} learner-state replicas")
        self.replicas = [_Replica(s, m, control, config, self.numel) for s, m in zip(states, mirrors)]
        local = [r for r in self.replicas if r.device == self.device]
        if not local:
            raise ValueError(f"no learner-state replica on the learner's device {self.device} "
                             f"(replicas on {[str(r.device) for r in self.replicas]})")
        self.local = local[0]
        self.host = all(r.mirror is None for r in self.replicas) if host is None else bool(host)
        for r in self.replicas:
            if r.device != self.device:
                r.grad = torch.empty(self.numel, dtype=torch.float32, device=r.device)
        self.journal = StepJournal(control)
        self._params = list(self.online.parameters())
        self._grad = torch.empty(self.numel, dtype=torch.float32, device=self.device)
        self._host_views = [torch.from_numpy(params.buffer_view(b)) for b in range(params.buffers)]
        self._target_version = -1
        self.snapshot_version = -1
        self._holding = False  # CUDA: the snapshot's pin is held until the device has copied it
        # the batch: sampled straight into these arrays (pinned when the learner is on CUDA)
        empty = replay.empty_batch(config.batch_size)
        self._np_batch = empty
        hist = self.action_history > 0
        if self.device.type == "cuda":
            pinned = {k: torch.from_numpy(np.asarray(v)).pin_memory() for k, v in _batch_items(empty, hist)}
            self._np_batch = _replace_batch(empty, {k: t.numpy() for k, t in pinned.items()})
            self._host = pinned
        else:
            self._host = {k: torch.from_numpy(np.asarray(v)) for k, v in _batch_items(empty, hist)}

    def _release_snapshot(self) -> None:
        if self._holding:
            self.params.unpin()
            self._holding = False

    # kept for callers of the single-replica layout
    @property
    def adam(self) -> SharedAdam:
        return self.local.adam

    # --- the steps of one update
    def snapshot(self) -> int:
        """Loads the newest published parameters into the local online network; returns their version."""
        self._release_snapshot()
        version, b = self.params.pin_buffer()
        mirror = self.local.mirror
        try:
            self.flat.copy_(mirror[b] if mirror is not None else self._host_views[b])
        except BaseException:
            self.params.unpin()
            raise
        if self.device.type == "cuda":
            self._holding = True  # unpinned after the next sync of the device (in apply): the copy is done
        else:
            self.params.unpin()
        self.snapshot_version = int(version)
        return self.snapshot_version

    def sample(self) -> dict[str, Any]:
        """Samples a batch into the preallocated arrays; returns it as tensors on the learner's device."""
        if self.cfg.prioritized:
            beta = beta_at(int(self.control[Control.UPDATES]), self.cfg.priority_beta, self.cfg.priority_beta_steps)
            self.replay.sample(self.cfg.batch_size, out=self._np_batch, beta=beta, learn_on=self.cfg.learn_on)
        else:
            self.replay.sample(self.cfg.batch_size, out=self._np_batch, learn_on=self.cfg.learn_on)
        if self.device.type == "cuda":
            return {k: t.to(self.device, non_blocking=True) for k, t in self._host.items()}
        return self._host

    def gradient(self, batch: dict[str, Any], update_priorities: bool = True) -> tuple[Any, Any, Any]:
        """Fills the flat gradient of the DQN loss at the snapshot, clipped to ``max_grad_norm``; returns
        (loss, mean Q, grad norm) as 0-d tensors on the learner's device (no device sync here).

        With prioritized replay it also sets the batch's priorities (unless ``update_priorities`` is False)."""
        import torch

        from rtcore.models.noisy import reset_noise

        for p in self._params:
            p.grad = None
        if self.noisy:  # new noise for this gradient, on both networks (the authors: after every update)
            reset_noise(self.online)
            reset_noise(self.target)
        losses_fn = c51_losses if self.distributional else td_losses
        losses, q, prio = losses_fn(self.online, self.target, batch["obs"], batch["action"], batch["reward"],
                                    batch["discount"], batch["next_obs"], self.cfg.double_dqn,
                                    batch.get("action_history"), batch.get("next_action_history"))
        if self.cfg.prioritized:
            loss = (losses * batch["weight"]).mean()
        else:
            loss = losses.mean()
        loss.backward()
        if self.cfg.prioritized and update_priorities:  # any process may update priorities, no turn needed
            self.replay.update_priorities(self._np_batch.index,
                                          prio.to("cpu", torch.float64).numpy() + self.cfg.priority_eps)
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                 for p in self._params]
        torch.cat(grads, out=self._grad)
        norm = torch.linalg.vector_norm(self._grad)
        if self.cfg.max_grad_norm > 0:  # scale = min(1, max / norm), computed on the device: no sync
            self._grad.mul_(torch.clamp(self.cfg.max_grad_norm / (norm + 1e-6), max=1.0))
        return loss.detach(), q.mean(), norm

    def apply(self) -> int:
        """Applies the gradient to the shared master parameters in this learner's turn (every replica), and
        publishes them; returns the newest version.

        All or nothing (:class:`rtcore.agent.optim.StepJournal`): the step is journaled, written into the
        other bank of the state and committed with one store; a step its learner died in is rolled back or
        completed by the next turn holder (here, first). A step whose parameters come out non-finite is not
        committed (``ValueError``: a diverged learner must not hand NaNs to every worker). A publish that
        finds no free buffer (every spare one pinned by a reader) is skipped: the master keeps the update
        and the next publish carries it. Also refreshes the shared target network every ``target_update``
        updates, all while holding the turn.
        """
        grads = []
        for r in self.replicas:
            if r.grad is not None:
                r.grad.copy_(self._grad, non_blocking=True)
            grads.append(r.grad if r.grad is not None else self._grad)
        try:
            version = self.journal.apply(self.replicas, grads, self.cfg.target_update, self._publish)
        except NonFiniteStep as e:
            raise ValueError(f"learner {self.learner}: {e}; the update was rolled back and nothing was "
                             f"published") from None
        finally:
            self._release_snapshot()
        self._sync_target()
        return version

    def recover(self) -> str | None:
        """In the turn: settles a step whose learner died in it (``"rolled back"`` or ``"completed"``)."""
        return self.journal.recover(self.replicas, self._publish)

    def _publish(self, t: int) -> int:
        return _publish_bank(self.params, self.replicas, self.local, self._host_views if self.host else None, t)

    def _sync_target(self) -> None:
        tv = int(self.control[Control.TARGET_VERSION])
        if tv != self._target_version:
            self.target_flat.copy_(self.local.target)
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
            self.recover()
            self._sync_target()
        finally:
            if self.turnstile is not None:
                self.turnstile.pass_turn(self._slot)
        return True

    def leave(self) -> None:
        self._release_snapshot()
        if self.turnstile is not None:
            try:
                self.turnstile.leave(self._slot)
            except Exception:
                pass

    def warmup(self) -> None:
        """One gradient on the (zeroed) batch arrays, applied nowhere: the first backward pass allocates
        its working memory here, before the env starts, instead of in the middle of a realtime run."""
        self.gradient(self._host if self.device.type == "cpu" else
                      {k: t.to(self.device) for k, t in self._host.items()}, update_priorities=False)
        self.local.sync()

    def update(self, should_stop: Callable[[], bool] = lambda: False) -> UpdateInfo | None:
        """One full update; None when told to stop while waiting for the turn."""
        t0 = time.monotonic()
        self.snapshot()
        batch = self.sample()
        t1 = time.monotonic()
        loss, q_mean, norm = self.gradient(batch)  # on CUDA: queued, not waited for (apply syncs)
        t2 = time.monotonic()
        if not self._wait_turn(should_stop):
            self._release_snapshot()
            return None
        t3 = time.monotonic()
        try:
            version = self.apply()
        finally:
            if self.turnstile is not None:
                self.turnstile.pass_turn(self._slot)
        t4 = time.monotonic()
        info = UpdateInfo(version, self.snapshot_version, float(loss), float(q_mean), float(norm),
                          t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        if self.stats is not None:
            s = self.stats
            s[LearnerCol.UPDATES] += 1
            s[LearnerCol.SAMPLE_S] += info.sample_s
            s[LearnerCol.GRAD_S] += info.grad_s
            s[LearnerCol.WAIT_S] += info.wait_s
            s[LearnerCol.APPLY_S] += info.apply_s
            s[LearnerCol.LOSS] = info.loss
            s[LearnerCol.Q_MEAN] = info.q_mean
            s[LearnerCol.GRAD_NORM] = info.grad_norm
            s[LearnerCol.VERSION] = version
            s[LearnerCol.STALENESS] += max(0, version - 1 - self.snapshot_version)
            s[LearnerCol.HEARTBEAT] = t4
        return info


def _publish_bank(params: Any, replicas: list[_Replica], local: _Replica, host_views: list[Any] | None, t: int) -> int:
    """Publishes bank ``t % 2``'s master as a new version: into every replica's mirror, and into the
    store's host buffer when ``host_views`` are given (from ``local``'s state). -1 -> the newest version
    (skipped: the master keeps the update, the next publish carries it)."""
    b = params.begin_write(0.0)
    if b < 0:
        return params.version
    try:
        for r in replicas:
            if r.mirror is not None:
                r.mirror[b].copy_(bank(r.state, t)[0])
        if host_views is not None:
            host_views[b].copy_(bank(local.state, t)[0])
        for r in replicas:
            r.sync()  # the version is complete on every device before readers can pin it
    except BaseException:
        params.abort_write()
        raise
    return params.commit()


def settle_journal(params: Any, states: Any, control: np.ndarray, *, mirrors: Any = None,
                   host: bool = True) -> str | None:
    """Once every learner has stopped: settles an optimizer step the last of them died in, as the next turn
    holder would have (:meth:`rtcore.agent.optim.StepJournal.recover`): ``"rolled back"``, ``"completed"``
    (its tail redone: target refresh, publish, counters) or None. So a run's final checkpoint never keeps a
    committed step whose update count and target were not brought up to date. ``states``/``mirrors``: as
    a learner gets them (one state or a list of replicas; host shared-memory rows or tensors)."""
    import torch

    states = list(states) if isinstance(states, (list, tuple)) else [states]
    mirrors = list(mirrors) if isinstance(mirrors, (list, tuple)) else [mirrors] * len(states)
    numel = int(params.numel)
    replicas = [_Replica(st, m, control, LearnerConfig(), numel) for st, m in zip(states, mirrors)]
    views = [torch.from_numpy(params.buffer_view(b)) for b in range(params.buffers)] if host else None
    return StepJournal(control).recover(replicas, lambda t: _publish_bank(params, replicas, replicas[0], views, t))


def _batch_items(batch: Any, history: bool = False) -> list[tuple[str, Any]]:
    keys = ("obs", "next_obs", "action", "reward", "done", "discount", "weight")
    if history:  # the model's second input, online (obs) and bootstrap (next_obs)
        keys += ("action_history", "next_action_history")
    return [(k, getattr(batch, k)) for k in keys]


def _replace_batch(batch: Any, arrays: dict[str, np.ndarray]) -> Any:
    if hasattr(batch, "_replace"):
        return batch._replace(**arrays)
    import dataclasses

    return dataclasses.replace(batch, **arrays)
