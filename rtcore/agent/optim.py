"""The learners' shared optimizer state and the journal that makes each optimizer step all or nothing.

Every learner applies its gradient, in its turn, to one shared learner state: the master parameters,
Adam's two moments and the target network (host shared memory, or a GPU tensor shared through CUDA IPC).
A learner can die anywhere (SIGKILL, OOM), including in the middle of applying a step, and the next turn
holder must never build on a half-applied one: Adam's element-wise passes (``m``, then ``v``, then the
parameters) leave a mix of two steps that no later step can repair.

So the state keeps two banks of ``(master, m, v)``, a ``(7, numel)`` float32 array::

    rows 0-2: bank 0 (master, m, v)    rows 3-5: bank 1 (master, m, v)    row 6: the target network

and step ``t`` reads bank ``(t - 1) % 2`` and writes bank ``t % 2``; the bank holding the state after
step ``s`` is ``s % 2``, where ``s`` is the committed step count ``Control.OPT_STEP``. A step is
journaled in the run's shared control array (``Control.JOURNAL_*``) before it writes anything:

1. ``JOURNAL_UPDATES``, ``JOURNAL_TARGET`` (the counters the step will set), then ``JOURNAL_STEP = t``;
2. Adam writes bank ``t % 2`` from bank ``(t - 1) % 2`` (which it never touches), then waits for the device;
3. the commit: ``OPT_STEP = t`` (one aligned 8-byte store);
4. the tail, idempotent: the target refresh when due (a copy of bank ``t % 2``'s master), the publish of
   the new version, ``UPDATES`` and ``TARGET_VERSION`` set from the journal, then ``JOURNAL_DONE = t``.

The next turn holder looks first (:meth:`StepJournal.recover`): ``JOURNAL_STEP > OPT_STEP`` is a step that
died before its commit, and is rolled back (nothing to undo: bank ``OPT_STEP % 2`` is whole); a committed
step with ``JOURNAL_DONE < OPT_STEP`` died in its tail, which is completed. A step whose parameters come
out non-finite is not committed either (rolled back, and the learner raises). Both outcomes are counted
(``Control.STEPS_ROLLED_BACK``, ``Control.STEPS_COMPLETED``) and reported in the run's summary.

A learner that is not dead but stalled (SIGSTOP, a frozen cgroup, a machine swapping) is the one case
a journal cannot settle alone: once the turnstile's heartbeat timeout hands its turn on, it could wake
up and go on writing the bank the next holder writes. So the runner SIGKILLs a learner whose turnstile
heartbeat is silent for half that timeout, before the turnstile moves on, and the journal records its
owner's pid: a step whose learner lost the turn is not committed (:class:`LostTurn`).

The price: one more copy of the parameters and moments (7 rows instead of 4) and the same arithmetic
(Adam's passes write the other bank instead of their own).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from rtcore.agent.telemetry import Control

__all__ = ["SharedAdam", "StepJournal", "NonFiniteStep", "LostTurn", "STATE_ROWS", "TARGET", "bank", "new_learner_state", "init_learner_state",
           "read_learner_state", "adam_into"]

BANK_ROWS = 3      # master, first moment, second moment
STATE_ROWS = 7     # two banks and the target network
TARGET = 6


def bank(state: Any, step: int) -> Any:
    """The ``(3, numel)`` rows (master, m, v) of ``state`` that hold the state after step ``step``."""
    b = (int(step) % 2) * BANK_ROWS
    return state[b:b + BANK_ROWS]


def init_learner_state(state: Any, params: Any, target: Any = None, moments: Any = None, opt_step: int = 0) -> Any:
    """Fills a ``(7, numel)`` learner state (numpy array or tensor) in place: bank ``opt_step % 2`` holds
    ``params`` and ``moments`` (default zero), the other bank zeros, the target row ``target`` (default
    ``params``). Returns ``state``."""
    torchy = not isinstance(state, np.ndarray)

    def conv(x: Any) -> Any:
        if torchy:
            import torch

            return torch.as_tensor(np.asarray(x, np.float32) if not isinstance(x, torch.Tensor) else x,
                                   dtype=torch.float32, device=state.device)
        return np.asarray(x, np.float32)

    if tuple(state.shape)[0] != STATE_ROWS:
        raise ValueError(f"learner state has shape {tuple(state.shape)}, expected ({STATE_ROWS}, numel)")
    state[:] = 0
    cur = bank(state, opt_step)
    cur[0] = conv(params).reshape(-1)
    if moments is not None:
        cur[1:3] = conv(moments).reshape(2, -1)
    state[TARGET] = conv(params if target is None else target).reshape(-1)
    return state


def new_learner_state(flat: Any, device: Any = "cpu") -> Any:
    """A learner state for the flat parameters ``flat``: a ``(7, numel)`` float32 tensor on ``device``
    (step 0: bank 0 holds ``flat`` and zero moments, the target is ``flat``). On CUDA it pickles (to a
    spawned process, with the ``multiprocessing`` of a process that imported torch) as a CUDA IPC handle:
    every learner on that GPU applies to the same memory. On the CPU a run keeps it in a
    :class:`rtcore.shared.shared_array.SharedArray` instead (see the runner)."""
    import torch

    flat = torch.as_tensor(flat, dtype=torch.float32).reshape(-1)
    state = torch.zeros((STATE_ROWS, flat.numel()), dtype=torch.float32, device=device)
    return init_learner_state(state, flat)


def read_learner_state(state: Any, control: np.ndarray, timeout: float = 10.0) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(opt_step, params, target, moments)`` as host float32 copies of one committed step, read while the
    learners may be applying: bank ``s % 2`` is not written again before step ``s + 2`` starts, so a copy
    taken while ``OPT_STEP`` stays below ``s + 2`` is whole. The target is the newest refreshed one."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        s = int(control[Control.OPT_STEP])
        rows = bank(state, s)
        host = rows.cpu().numpy().copy() if not isinstance(rows, np.ndarray) else rows.copy()
        target = state[TARGET]
        target = target.cpu().numpy().copy() if not isinstance(target, np.ndarray) else target.copy()
        if int(control[Control.JOURNAL_STEP]) < s + 2 or time.monotonic() > deadline:
            return s, host[0], target, host[1:3]


def adam_into(src: Any, dst: Any, grad: Any, t: int, lr: float, betas: tuple[float, float], eps: float,
              denom: Any) -> None:
    """One Adam step (Kingma & Ba; ``torch.optim.Adam`` without weight decay or amsgrad): reads
    ``src = (param, m, v)`` and writes ``dst`` (the same rows for an in-place step). ``denom`` is scratch
    of one row."""
    import torch

    b1, b2 = betas
    torch.mul(src[1], b1, out=dst[1]).add_(grad, alpha=1.0 - b1)
    torch.mul(src[2], b2, out=dst[2]).addcmul_(grad, grad, value=1.0 - b2)
    torch.sqrt(dst[2], out=denom)
    denom.div_(math.sqrt(1.0 - b2 ** t)).add_(eps)
    torch.addcdiv(src[0], dst[1], denom, value=-lr / (1.0 - b1 ** t), out=dst[0])


class SharedAdam:
    """Adam whose moments and step count live in shared memory.

    ``moments`` is a float32 array or tensor of shape ``(2, numel)`` (first and second moment), for the
    in-place :meth:`step`; the learners use :meth:`step_into` between the two banks of a learner state.
    ``control`` is the run's int64 control array (slot ``Control.OPT_STEP`` is the step count). Every
    learner applies with the same state, one at a time (the caller holds the turn).
    """

    def __init__(self, moments: Any, control: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        shape, dtype = tuple(moments.shape), str(moments.dtype).replace("torch.", "")
        if len(shape) != 2 or shape[0] != 2 or dtype != "float32":
            raise ValueError(f"moments has shape {shape} and dtype {dtype}, expected (2, numel) float32")
        if isinstance(moments, np.ndarray):
            moments = torch.from_numpy(moments)
        self.m = moments[0]
        self.v = moments[1]
        self.control = control
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self._denom = torch.empty_like(self.v)

    @property
    def step_count(self) -> int:
        return int(self.control[Control.OPT_STEP])

    def step(self, param: Any, grad: Any, t: int | None = None) -> None:
        """``param -= lr * m_hat / (sqrt(v_hat) + eps)`` in place, with ``grad`` (flat float32 tensors on the
        moments' device). ``t`` (default: the shared step count + 1) is the step number; the caller that
        passes it advances the shared count itself."""
        advance = t is None
        if t is None:
            t = int(self.control[Control.OPT_STEP]) + 1
        rows = (param, self.m, self.v)
        adam_into(rows, rows, grad, t, self.lr, self.betas, self.eps, self._denom)
        if advance:
            self.control[Control.OPT_STEP] = t

    def step_into(self, src: Any, dst: Any, grad: Any, t: int) -> None:
        """Step ``t`` from the ``(3, numel)`` bank ``src`` into the bank ``dst``; ``src`` is only read."""
        adam_into(src, dst, grad, t, self.lr, self.betas, self.eps, self._denom)


class NonFiniteStep(ValueError):
    """An optimizer step made a parameter NaN or infinite; it was not committed."""


class LostTurn(RuntimeError):
    """This learner's step was taken over by the next turn holder while it was stalled; not committed."""


class StepJournal:
    """The all-or-nothing protocol of the module docstring over a run's control array. The caller holds
    the turn for every call."""

    def __init__(self, control: np.ndarray, owner: int | None = None) -> None:
        import os

        self.c = control
        self.owner = os.getpid() if owner is None else int(owner)

    def begin(self, target_update: int) -> tuple[int, bool]:
        """Journals the next step; returns ``(t, refresh)``: its number and whether it refreshes the target."""
        c = self.c
        c[Control.JOURNAL_OWNER] = self.owner
        t = int(c[Control.OPT_STEP]) + 1
        updates = int(c[Control.UPDATES]) + 1
        refresh = updates % target_update == 0
        c[Control.JOURNAL_UPDATES] = updates
        c[Control.JOURNAL_TARGET] = int(c[Control.TARGET_VERSION]) + int(refresh)
        c[Control.JOURNAL_STEP] = t  # from here a death leaves bank t % 2 half written: rolled back
        return t, refresh

    def abort(self) -> None:
        """The journaled step is not committed (its result was not finite): as if it had died before."""
        self.c[Control.JOURNAL_STEP] = int(self.c[Control.OPT_STEP])

    def commit(self, t: int) -> None:
        """Commits step ``t``, unless this learner no longer owns the journal (:class:`LostTurn`): a learner
        stalled (stopped, descheduled) past the turnstile's timeout lost its turn, and the next holder
        rolled its step back. The runner kills a learner stalled that long before the turnstile moves
        on; this check is the second line."""
        c = self.c
        if int(c[Control.JOURNAL_OWNER]) != self.owner or int(c[Control.OPT_STEP]) != t - 1 \
                or int(c[Control.JOURNAL_STEP]) != t:
            raise LostTurn(f"optimizer step {t} lost its turn while it was being applied (stalled past the "
                           f"turnstile's timeout); not committed")
        c[Control.OPT_STEP] = t

    def refresh_due(self) -> bool:
        """The committed step's tail refreshes the target (a completed tail redoes the copy)."""
        return int(self.c[Control.JOURNAL_TARGET]) != int(self.c[Control.TARGET_VERSION])

    def finish(self, t: int) -> None:
        """The end of step ``t``'s tail: the counters from the journal, then done."""
        c = self.c
        c[Control.UPDATES] = int(c[Control.JOURNAL_UPDATES])
        c[Control.TARGET_VERSION] = int(c[Control.JOURNAL_TARGET])
        c[Control.JOURNAL_DONE] = t

    def recover(self, replicas: Sequence[Any], publish: Callable[[int], int]) -> str | None:
        """Settles a step its learner died in: ``"rolled back"`` (died before the commit), ``"completed"``
        (died in the tail, which is redone), else None."""
        c = self.c
        s, j = int(c[Control.OPT_STEP]), int(c[Control.JOURNAL_STEP])
        if j > s:
            c[Control.JOURNAL_STEP] = s
            c[Control.STEPS_ROLLED_BACK] += 1
            return "rolled back"
        if int(c[Control.JOURNAL_DONE]) < s:
            self.tail(s, replicas, publish)
            c[Control.STEPS_COMPLETED] += 1
            return "completed"
        return None

    def apply(self, replicas: Sequence[Any], grads: Sequence[Any], target_update: int,
              publish: Callable[[int], int]) -> int:
        """One whole step: settles an interrupted one, journals, writes every replica's other bank with its
        gradient, commits, runs the tail; returns what ``publish(t)`` returned (the version). A replica has
        ``state`` (the ``(7, numel)`` rows), ``adam`` (a :class:`SharedAdam`), ``target`` (its target row)
        and ``sync()`` (waits for its device). ``publish(t)`` publishes bank ``t % 2``'s master and may run
        again for the same step after a death. Raises :class:`NonFiniteStep` (nothing committed) when the
        first replica's new parameters are not all finite."""
        import torch

        self.recover(replicas, publish)
        t, _ = self.begin(target_update)
        for r, g in zip(replicas, grads):
            r.adam.step_into(bank(r.state, t - 1), bank(r.state, t), g, t)
        if not bool(torch.isfinite(bank(replicas[0].state, t)[0].sum())):  # one reduction (and a device sync)
            self.abort()
            raise NonFiniteStep(f"the parameters have a non-finite value after optimizer step {t}")
        for r in replicas:
            r.sync()  # the whole step is in memory before it is committed
        self.commit(t)
        return self.tail(t, replicas, publish)

    def tail(self, t: int, replicas: Sequence[Any], publish: Callable[[int], int]) -> int:
        """The idempotent end of committed step ``t``: target refresh when due, publish, counters."""
        if self.refresh_due():
            for r in replicas:
                r.target.copy_(bank(r.state, t)[0])
        version = publish(t)
        for r in replicas:
            r.sync()  # the next turn holder (another process) reads what this one wrote
        self.finish(t)
        return version

    def reset(self, opt_step: int) -> None:
        """A fresh or resumed run at step ``opt_step``: nothing pending."""
        c = self.c
        c[Control.OPT_STEP] = c[Control.JOURNAL_STEP] = c[Control.JOURNAL_DONE] = int(opt_step)
        c[Control.JOURNAL_UPDATES] = int(c[Control.UPDATES])
        c[Control.JOURNAL_TARGET] = int(c[Control.TARGET_VERSION])
