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

Length: the loss, the crash-safe shared Adam and the learner whose apply journals each update belong
together (one update's steps and its recovery are read side by side).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rtcore.agent._proc import join_slot
from rtcore.agent.telemetry import Control, LearnerCol
from rtcore.shared.params import bind_flat

__all__ = ["LearnerConfig", "SharedAdam", "DQNLearner", "UpdateInfo", "dqn_loss", "td_losses", "c51_losses",
           "beta_at"]


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


def td_losses(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
              double_dqn: bool = True):
    """:func:`dqn_loss` per transition: ``(huber [B], q_taken [B] detached, |TD error| [B] detached)``."""
    import torch
    import torch.nn.functional as F

    q = online(obs)
    q_taken = q.gather(1, action.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next_target = target(next_obs)
        best = (online(next_obs) if double_dqn else q_next_target).argmax(dim=1, keepdim=True)
        y = reward + discount * q_next_target.gather(1, best).squeeze(1)
    losses = F.smooth_l1_loss(q_taken, y, reduction="none")
    return losses, q_taken.detach(), (q_taken.detach() - y).abs()


def c51_losses(online: Any, target: Any, obs: Any, action: Any, reward: Any, discount: Any, next_obs: Any,
               double_dqn: bool = True):
    """The categorical (C51) loss per transition: ``(cross-entropy [B], Q(obs, action) [B] detached,
    cross-entropy [B] detached)``. The target distribution is the target network's at ``next_obs`` for
    the action the online network (double) or the target network picks by expected value, projected
    from ``reward + discount * z`` onto the support (:func:`rtcore.models.distributional.project_distribution`).
    """
    import torch

    from rtcore.models.distributional import categorical_loss, project_distribution

    support = online.head.support
    b = action.shape[0]
    rows = torch.arange(b, device=action.device)
    log_p = online.log_dist(obs)[rows, action.long()]  # [B, atoms]
    with torch.no_grad():
        next_probs_all = target.log_dist(next_obs).exp()  # [B, A, atoms]
        q_next = (online(next_obs) if double_dqn else (next_probs_all * support).sum(2))
        best = q_next.argmax(dim=1)
        m = project_distribution(next_probs_all[rows, best], reward.float(), discount.float(), support)
        q_taken = (log_p.detach().exp() * support).sum(1)
    losses = categorical_loss(log_p, m)
    return losses, q_taken, losses.detach()


class SharedAdam:
    """Adam (Kingma & Ba) whose moments and step count live in shared memory.

    ``moments`` is a float32 array of shape ``(4, numel)``: two banks of (first moment, second moment).
    ``control`` is the run's int64 control array (slot ``Control.OPT_STEP`` is the step count ``t``).
    The moments after step ``t`` live in bank ``t % 2``: a step reads bank ``(t - 1) % 2`` and writes
    the other one, and only storing the new step count commits it. A process killed in the middle of
    a step (SIGKILL, OOM) so leaves the committed moments untouched: the step is rolled back, never
    half-applied. Every learner applies with the same state, one at a time (the caller holds the
    turn). Numerically identical to ``torch.optim.Adam`` without weight decay or amsgrad.
    """

    def __init__(self, moments: np.ndarray, control: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        if moments.ndim != 2 or moments.shape[0] != 4 or moments.dtype != np.float32:
            raise ValueError(f"moments has shape {moments.shape} and dtype {moments.dtype}, expected (4, numel) float32 "
                             f"(two banks of first and second moments)")
        self._banks = [(torch.from_numpy(moments[0]), torch.from_numpy(moments[1])),
                       (torch.from_numpy(moments[2]), torch.from_numpy(moments[3]))]
        self.control = control
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self._denom = torch.empty_like(self._banks[0][1])

    @property
    def step_count(self) -> int:
        return int(self.control[Control.OPT_STEP])

    @property
    def m(self) -> Any:
        """The committed first moment (a view of the shared array)."""
        return self._banks[self.step_count % 2][0]

    @property
    def v(self) -> Any:
        """The committed second moment (a view of the shared array)."""
        return self._banks[self.step_count % 2][1]

    def step(self, param: Any, grad: Any, commit: bool = True) -> int:
        """``param -= lr * m_hat / (sqrt(v_hat) + eps)`` in place, with ``grad``; both flat float32 CPU
        tensors. Returns the new step count ``t``. ``commit=False`` writes the new moments into their
        bank but leaves the step count: :meth:`commit` (or a caller's journal) makes them current."""
        import torch

        b1, b2 = self.betas
        t = int(self.control[Control.OPT_STEP]) + 1
        m0, v0 = self._banks[(t - 1) % 2]
        m, v = self._banks[t % 2]
        torch.mul(m0, b1, out=m).add_(grad, alpha=1.0 - b1)
        torch.mul(v0, b2, out=v).addcmul_(grad, grad, value=1.0 - b2)
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        torch.sqrt(v, out=self._denom)
        self._denom.div_(math.sqrt(bc2)).add_(self.eps)
        param.addcdiv_(m, self._denom, value=-self.lr / bc1)
        if commit:
            self.commit(t)
        return t

    def commit(self, t: int) -> None:
        """Makes the moments of step ``t`` (written by ``step(commit=False)``) the current ones."""
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
        from rtcore.models.noisy import NoisyLinear

        self.distributional = int(getattr(getattr(online, "head", None), "atoms", 1)) > 1
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
        self.recoveries = 0  # interrupted updates of dead learners this one completed or rolled back
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
        if self.cfg.prioritized:
            beta = beta_at(int(self.control[Control.UPDATES]), self.cfg.priority_beta, self.cfg.priority_beta_steps)
            self.replay.sample(self.cfg.batch_size, out=self._np_batch, beta=beta, learn_on=self.cfg.learn_on)
        else:
            self.replay.sample(self.cfg.batch_size, out=self._np_batch, learn_on=self.cfg.learn_on)
        if self.device.type == "cuda":
            return {k: t.to(self.device, non_blocking=True) for k, t in self._host.items()}
        return self._host

    def gradient(self, batch: dict[str, Any], update_priorities: bool = True) -> tuple[float, float, float]:
        """Fills the flat gradient of the DQN loss at the snapshot; returns (loss, mean Q, grad norm).

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
                                    batch["discount"], batch["next_obs"], self.cfg.double_dqn)
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

        All or nothing, also when the process is killed half-way: the new parameters are computed in a
        private copy and the new Adam moments in the spare bank (:class:`SharedAdam`), then a journal in
        the control array (``Control.APPLY_*``) names the version the update publishes and the counters
        it leaves; the publish is the commit point. The next turn holder finds a journal left by a dead
        learner in :meth:`recover`: published, it completes the bookkeeping; not published, it drops it
        (the committed moments were never touched).
        """
        import torch

        self.recover()
        c = self.control
        with self.params.read() as (base, view):
            self._work.copy_(torch.from_numpy(view))
        t = self.adam.step(self._work, self._grad, commit=False)
        updates = int(c[Control.UPDATES]) + 1
        c[Control.APPLY_VERSION] = int(base) + 1
        c[Control.APPLY_UPDATES] = updates
        c[Control.APPLY_TARGET] = int(c[Control.TARGET_VERSION]) + (updates % self.cfg.target_update == 0)
        c[Control.APPLY_STEP] = t  # last: arms the journal (x86 keeps these plain stores in order)
        # Only the turn holder publishes, and the runner sizes the store at readers + 2 buffers, so a
        # publish is never skipped; the timeout turns a broken invariant into an error, not a lost update.
        version = int(self.params.publish(self._work.numpy(), timeout=5.0))
        if version < 0:
            c[Control.APPLY_STEP] = 0  # nothing was published: roll back
            raise RuntimeError(f"learner {self.learner}: could not publish parameters within 5 s "
                               f"(store stats: {self.params.stats()})")
        self._commit(self._work)
        self._sync_target()
        return version

    def _commit(self, published: Any) -> None:
        """The bookkeeping after the journal's publish; idempotent (absolute values), so a recovery may
        redo what a killed learner had done of it."""
        c = self.control
        if int(c[Control.APPLY_TARGET]) != int(c[Control.TARGET_VERSION]):
            self.shared_target.copy_(published)
            c[Control.TARGET_VERSION] = c[Control.APPLY_TARGET]
        c[Control.UPDATES] = c[Control.APPLY_UPDATES]
        self.adam.commit(int(c[Control.APPLY_STEP]))
        c[Control.APPLY_STEP] = 0

    def recover(self) -> str | None:
        """Finishes or rolls back an update a learner was killed in the middle of (call in the turn).
        Returns ``"completed"``, ``"rolled back"`` or None (nothing in flight)."""
        import torch

        c = self.control
        step = int(c[Control.APPLY_STEP])
        if step == 0:
            return None
        if step == int(c[Control.OPT_STEP]) + 1 and self.params.version >= int(c[Control.APPLY_VERSION]):
            with self.params.read() as (_, view):  # the journal's version: nobody published since
                self._commit(torch.from_numpy(view))
            outcome = "completed"
        else:  # killed before its publish (or after its last store): the committed state stands
            c[Control.APPLY_STEP] = 0
            outcome = "rolled back"
        self.recoveries += 1
        return outcome

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
            self.recover()  # a learner killed in its turn (the one this process replaces, perhaps)
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
                      {k: t.to(self.device) for k, t in self._host.items()}, update_priorities=False)

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


def _batch_items(batch: Any) -> list[tuple[str, Any]]:
    keys = ("obs", "next_obs", "action", "reward", "done", "discount", "weight")
    return [(k, getattr(batch, k)) for k in keys]


def _replace_batch(batch: Any, arrays: dict[str, np.ndarray]) -> Any:
    if hasattr(batch, "_replace"):
        return batch._replace(**arrays)
    import dataclasses

    return dataclasses.replace(batch, **arrays)
