"""Staggered inference and round-robin learning: :class:`StaggerSchedule`, :class:`Turnstile`, :func:`n_star`.

:class:`StaggerSchedule` spaces N inference workers so that one of them publishes an action every
``tau / N`` seconds (paper, Algorithm 1 "maximum-time staggering", ``mode="max"``: ``tau`` is the running
maximum inference time; Algorithm 2, ``mode="mean"``: the mean of the last ``window`` inference times).
It lives in shared memory; every worker process attaches (pass the schedule to a ``spawn``-ed process,
or :meth:`StaggerSchedule.attach` by name) and runs::

    w = sched.join()
    while not stop:
        if not sched.wait_turn(w, timeout=1.0):       # False: sched.stop() was called
            break
        stack, step = obs_board.read(out=buf)
        t0 = monotonic(); action = policy(stack); dt = monotonic() - t0
        sched.report(w, dt)
        sched.wait_publish(w, timeout=1.0)
        action_board.post(action, step, w)
    sched.leave(w)

Workers can join and leave at any time. A worker that stops calling (crashed, killed) is dropped after
``max(heartbeat_timeout, 2 * tau_max)`` seconds of silence (a worker inside a forward pass does not call,
hence the ``2 * tau_max`` grace), and the survivors re-stagger so the action interval becomes
``tau / N_live``. Nothing blocks on another process: every wait takes a timeout, and
:meth:`StaggerSchedule.stop` wakes them all.

:class:`Turnstile` orders M learners round-robin: learner ``j`` applies its update only while it holds
the turn (turn ``u`` with ``u mod M_live == rank(j)``), then passes it on; a learner that dies is skipped
after ``heartbeat_timeout``.
"""

from __future__ import annotations

from typing import Any

from rtcore import _core
from rtcore._validate import MAX_SECONDS, in_range, index, ns, seconds, timeout_ns
from rtcore.shared._shm import SharedObject

__all__ = ["StaggerSchedule", "Turnstile", "n_star", "MODES", "PUSHBACKS", "TAU_WINDOW_MAX", "MEAN_SLOT_FLOOR"]

MODES = ("max", "mean")
PUSHBACKS = ("paper", "lattice", "authors")
TAU_WINDOW_MAX = int(_core.StaggerSchedule.MAX_TAU_WINDOW)  # a report rescans the window: O(tau_window)
DEFAULT_SPIN = 200e-6
_MAX_SPIN = 60.0  # seconds a wait may spin before sleeping
#: ``mode="mean"``: the publish-slot floor rtcore uses, as a fraction of the env period tau_M. At 1.0 the
#: slots keep a fixed phase against the env's ticks and wake-up jitter moves some posts across a tick
#: (measured, wall clock, 8-frame model, 12 workers: up to 12.8 % inaction); at 0.85 posts tolerate
#: ~2.5 ms of jitter at a small cost in the simulator (docs/design/stagger.md has the table).
MEAN_SLOT_FLOOR = 0.85


def _optional_id(what: str, value: Any) -> int:
    if value is None:
        return -1
    v = index(what, value)
    if v < 0:
        raise ValueError(f"{what} must be >= 0 or None (a free slot), got {v}")
    if v > 4095:  # the most slots a schedule or turnstile has (the core's int would overflow far above)
        raise IndexError(f"{what} {v} is out of range [0, 4096)")
    return v


def _id(what: str, value: Any) -> int:
    """A worker or learner id as the core's int: out-of-range ids are the core's IndexError, named here
    when they do not even fit an int."""
    v = index(what, value)
    if not -(2**31) <= v < 2**31:
        raise IndexError(f"{what} {v} is out of range")
    return v


def n_star(tau_theta_max: float, tau_m: float) -> int:
    """The number of staggered inference workers that act on every step: ``ceil(tau_theta_max / tau_m)``.

    Robust to float error: ``n_star(0.1, 1 / 59.7275) == 6`` and ``n_star(0.1, 0.02) == 5`` (a ratio
    within 1e-9 of an integer is that integer).
    """
    theta = seconds("tau_theta_max", tau_theta_max, positive=True, hi=MAX_SECONDS)
    m = seconds("tau_m", tau_m, positive=True, hi=MAX_SECONDS)
    if theta / m > 1e6:
        raise ValueError(f"tau_theta_max / tau_m must be at most 1e6 (workers), got {theta / m:g}")
    return int(_core.n_star(theta, m))


class StaggerSchedule(SharedObject):
    """When each of N inference workers may infer and publish, in shared memory.

    Args:
        n_workers: worker slots (ids ``0 .. n_workers - 1``); at most this many workers at once.
        tau_max: the seed of the running maximum inference time, in seconds (> 0). A good seed is a
            measured inference time: too small and the first reports push everyone back; too large and
            the actions stay further apart than needed for good (with ``tau_window=0`` a maximum never
            shrinks).
        mode: ``"max"`` (Algorithm 1: spacing by the running maximum, regular actions, needs
            ``N* = ceil(tau_max / tau_M)`` workers) or ``"mean"`` (Algorithm 2: spacing by the mean of the
            last ``window`` inference times, through a publish queue: a finished action takes the
            first free publish slot, slots ``max(mean / N, min_interval)`` apart, and a slow inference
            delays only its own action; fewer workers for jittered models, see README "Staggering").
        window: inference times the mean is taken over (``mode="mean"``; also reported as
            :attr:`mean_tau` in ``"max"`` mode).
        heartbeat_timeout: seconds of silence after which a worker is dropped (at least
            ``2 * tau_max``, see the module docstring).
        name: segment name (default: a fresh ``rtcore-sched-...``).
        spin: seconds each wait spins before its deadline (precision vs CPU; 0: sleep only).
        pushback: (``mode="max"``) how a report above tau moves the other workers. ``"lattice"`` (default): every
            worker re-staggers on the lattice anchored at the late worker's publish instant with the new
            tau, which restores the spacing ``tau / N`` exactly within one cycle. ``"paper"``: the paper's
            ``delay[j] += dist(j, i) * (t - tau) / N`` (DESIGN.md), which leaves the spacing uneven after
            an overshoot (simulated, 7 workers, tau_theta ~ N(100 ms, 10 ms): action-interval CV 57 %
            with "paper", 1.8 % with "lattice"; compare with ``rtcore.simulate(..., pushback=...)``).
            ``"authors"``: "paper" as the authors' code runs it: a push-back that arrives while the
            worker is still sleeping an earlier one is lost (their ``sleep(delay[i]); delay[i] = 0``).
        min_interval: (``mode="mean"``) seconds between publish slots at least, so the schedule does
            not publish much faster than the env takes actions; rtcore passes ``MEAN_SLOT_FLOOR * tau_M``
            (0: no floor, slots ``mean / N`` apart).
        tau_window: forgetting window of the running maximum, in reports (all workers together).
            ``0`` (default): the paper's all-time maximum, so one stall (a GC pause, a descheduled
            worker) widens the spacing for the rest of the run. ``W`` in ``[1, 1024]``: ``tau_max`` is
            the maximum of the last ``W`` reported inference times (the seed counts until the first
            report); a new maximum still raises it at once, and when the window's maximum falls below
            it by more than a quarter of an action interval, ``tau_max`` drops to the window's maximum
            and (``mode="max"``) the live workers re-stagger on it. The window is bounded in time as well:
            a time older than :attr:`horizon` (``max(1 s, 16 * tau_max seed)``) no longer counts, so a
            slow pass is forgotten within seconds however slowly the reports come after it. A pass
            longer than the horizon is a *stall* (a stopped or descheduled process), not an inference
            time: it is counted in :attr:`stalls`, raises nothing, and the workers re-stagger around it
            (a second stall within the horizon counts as the model's pace).
    """

    _KIND = "sched"
    _CORE = _core.StaggerSchedule

    def __init__(
        self,
        n_workers: int,
        tau_max: float,
        mode: str = "max",
        window: int = 32,
        heartbeat_timeout: float = 1.0,
        name: str | None = None,
        *,
        spin: float = DEFAULT_SPIN,
        pushback: str = "lattice",
        tau_window: int = 0,
        min_interval: float = 0.0,
    ) -> None:
        spin_ns = ns(seconds("spin", spin, positive=False, hi=_MAX_SPIN))  # before creating: nothing to undo
        if not isinstance(pushback, str) or pushback not in PUSHBACKS:
            raise ValueError(f"pushback must be one of {PUSHBACKS}, got {pushback!r}")
        n = in_range("n_workers", n_workers, 1, 4096)
        tau = seconds("tau_max", tau_max, positive=True, hi=MAX_SECONDS)
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        win = in_range("window", window, 1, 65536)
        tw = in_range("tau_window", tau_window, 0, TAU_WINDOW_MAX)
        hb = seconds("heartbeat_timeout", heartbeat_timeout, positive=True, hi=MAX_SECONDS)
        mi = seconds("min_interval", min_interval, positive=False, hi=MAX_SECONDS)
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, n, max(1, ns(tau)), MODES.index(mode), win,
                                      max(1, ns(hb)), PUSHBACKS.index(pushback), tw, ns(mi)), name, owner=True)
        self._spin_ns = spin_ns

    @classmethod
    def attach(cls, name: str, *, spin: float = DEFAULT_SPIN) -> StaggerSchedule:
        """Attaches to an existing schedule by name (see :meth:`SharedObject.attach`); ``spin`` is this
        process's sleep-then-spin margin for its waits."""
        spin_ns = ns(seconds("spin", spin, positive=False, hi=_MAX_SPIN))  # before attaching
        self = super().attach(name)
        self._spin_ns = spin_ns
        return self

    def _from_handle(self, handle: Any) -> None:
        self._spin_ns = ns(DEFAULT_SPIN)

    # ---- a worker's calls ---------------------------------------------------------------------

    def join(self, worker: int | None = None) -> int:
        """Claim a worker slot (the lowest free one, or ``worker``) and return its id. The new worker is
        staggered in among the live ones at its first :meth:`wait_turn`. ``rtcore.SlotError`` if the
        slot is taken by a live worker or none is free."""
        return self._h.join(_optional_id("worker", worker))

    def wait_turn(self, worker: int, timeout: float | None = None) -> bool:
        """Sleep until ``worker`` may read the newest observation and start inferring: its start offset
        at first (or after a re-stagger), then any pending push-back delay. Returns ``True`` at the
        turn, ``False`` if :meth:`stop` was called; ``TimeoutError`` if ``timeout`` seconds pass first;
        ``rtcore.SlotError`` if ``worker`` was dropped and its slot taken (join again).
        Heart-beats while it waits; the GIL is released; Ctrl-C works."""
        return self._h.wait_turn(_id("worker", worker), timeout_ns(timeout), self._spin_ns)

    def report(self, worker: int, duration: float) -> float:
        """``worker``'s inference took ``duration`` seconds: apply the algorithm's update (a new maximum
        pushes the other workers back) and return the seconds it must still wait before publishing
        (0.0: publish at once)."""
        return self._h.report(_id("worker", worker), ns(seconds("duration", duration, positive=False, hi=MAX_SECONDS))) * 1e-9

    def wait_publish(self, worker: int, timeout: float | None = None) -> bool:
        """Sleep until ``worker`` may publish the action it computed (``True``); ``False`` if
        :meth:`stop` was called; ``TimeoutError`` past ``timeout`` seconds."""
        return self._h.wait_publish(_id("worker", worker), timeout_ns(timeout), self._spin_ns)

    def heartbeat(self, worker: int) -> None:
        """Tell the schedule ``worker`` is alive (every call above does this too)."""
        self._h.heartbeat(_id("worker", worker))

    def leave(self, worker: int) -> None:
        """Give the slot back; the others re-stagger over the workers left. Harmless if it was dropped."""
        self._h.leave(_id("worker", worker))

    # ---- control and inspection ---------------------------------------------------------------

    def stop(self) -> None:
        """Make every wait (in every process) return ``False`` at once, and keep doing so."""
        self._h.set_stop(True)

    def resume(self) -> None:
        """Undo :meth:`stop`."""
        self._h.set_stop(False)

    @property
    def stopped(self) -> bool:
        """True between :meth:`stop` and :meth:`resume`."""
        return self._h.stopped

    def reap(self) -> int:
        """Drop the workers silent for too long now (waits do this too); return how many."""
        return self._h.reap()

    def pending_delay(self, worker: int) -> float:
        """Push-back (seconds) ``worker`` will sleep before its next turn."""
        return self._h.pending_delay_ns(_id("worker", worker)) * 1e-9

    def last_inference(self, worker: int) -> float:
        """The last inference time ``worker`` reported, in seconds."""
        return self._h.last_ns(_id("worker", worker)) * 1e-9

    @property
    def tau_max(self) -> float:
        """The running maximum inference time (seconds), seeded by the ``tau_max`` argument (over the
        last :attr:`tau_window` reports if that is > 0)."""
        return self._h.tau_max_ns * 1e-9

    @property
    def mean_tau(self) -> float:
        """Mean of the last ``window`` reported inference times (the seed before the first report)."""
        return self._h.mean_tau_ns * 1e-9

    @property
    def tau(self) -> float:
        """The spacing period of the mode: :attr:`tau_max` (``"max"``) or :attr:`mean_tau` (``"mean"``)."""
        return self._h.tau_ns * 1e-9

    @property
    def action_interval(self) -> float:
        """The interval between actions the schedule targets: ``tau / N_live`` (seconds)."""
        return self._h.action_interval_ns * 1e-9

    @property
    def live_workers(self) -> int:
        """Workers that hold a slot now (N_live)."""
        return self._h.live_workers

    @property
    def workers(self) -> list[int]:
        """Ids of the live workers, ascending."""
        return list(self._h.workers)

    @property
    def restaggers(self) -> int:
        """Re-staggers so far: membership changes (joins, leaves, drops), lattice push-backs, and
        moves of tau (the mean in ``"mean"`` mode, a lowering by :attr:`tau_window` in ``"max"`` mode)."""
        return int(self._h.epoch)

    @property
    def drops(self) -> int:
        """Workers dropped for silence so far."""
        return int(self._h.drops)

    @property
    def pushbacks(self) -> int:
        """Reports that pushed the other workers back (a new maximum, or above the mean)."""
        return int(self._h.pushbacks)

    @property
    def stalls(self) -> int:
        """Passes taken as stalls, not inference times (``tau_window > 0``): longer than :attr:`horizon`
        (a stopped or descheduled process). Such a pass widens nothing; the workers re-stagger around it."""
        return int(self._h.stalls)

    @property
    def horizon(self) -> float:
        """Seconds the ``tau_window`` remembers a time for, at most (``max(1 s, 16 * seed)``); a pass
        longer than this is a stall."""
        return self._h.horizon_ns * 1e-9

    @property
    def reports(self) -> int:
        """Inference times reported so far."""
        return int(self._h.samples)

    @property
    def mode(self) -> str:
        """``"max"`` or ``"mean"``, as created."""
        return MODES[self._h.mode]

    @property
    def pushback(self) -> str:
        """``"lattice"``, ``"paper"`` or ``"authors"``, as created."""
        return PUSHBACKS[self._h.pushback]

    @property
    def min_interval(self) -> float:
        """Seconds between mean mode's publish slots at least (0: no floor)."""
        return self._h.min_interval_ns / 1e9

    @property
    def n_workers(self) -> int:
        """Worker slots (ids ``0 .. n_workers - 1``)."""
        return self._h.n_workers

    @property
    def window(self) -> int:
        """Inference times the mean is taken over."""
        return self._h.window

    @property
    def tau_window(self) -> int:
        """Reports the running maximum is taken over (0: all of them, the paper)."""
        return self._h.tau_window

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds of silence after which a worker is dropped."""
        return self._h.heartbeat_timeout_ns * 1e-9


class Turnstile(SharedObject):
    """Round-robin turns for M learners, in shared memory.

    Args:
        n_learners: learner slots (ids ``0 .. n_learners - 1``).
        heartbeat_timeout: seconds of silence after which the learner holding the turn is dropped and
            skipped. Learners heart-beat on every call; one that computes for longer between calls
            should call :meth:`heartbeat`.
        name: segment name (default: a fresh ``rtcore-turn-...``).

    A learner's loop::

        j = ts.join()
        while training:
            grads = compute()                  # in parallel with the others
            u = ts.wait_turn(j, timeout=30.0)  # turn u: u mod M_live == rank of j
            apply(grads)
            ts.pass_turn(j)
        ts.leave(j)
    """

    _KIND = "turn"
    _CORE = _core.Turnstile

    def __init__(self, n_learners: int, heartbeat_timeout: float = 5.0, name: str | None = None) -> None:
        n = in_range("n_learners", n_learners, 1, 4096)
        hb = seconds("heartbeat_timeout", heartbeat_timeout, positive=True, hi=MAX_SECONDS)
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, n, max(1, ns(hb))), name, owner=True)

    def join(self, learner: int | None = None) -> int:
        """Claim a learner slot (the lowest free one, or ``learner``); return its id.
        ``rtcore.SlotError`` if the slot is taken by a live learner or none is free."""
        return self._h.join(_optional_id("learner", learner))

    def wait_turn(self, learner: int, timeout: float | None = None) -> int:
        """Sleep until ``learner`` holds the turn; return the turn number ``u``. A dead holder is skipped
        after ``heartbeat_timeout``. ``TimeoutError`` (naming the holder) past ``timeout`` seconds; ``-1``
        if :meth:`stop` was called. GIL released; Ctrl-C works."""
        return self._h.wait_turn(_id("learner", learner), timeout_ns(timeout))

    def try_turn(self, learner: int) -> int | None:
        """The turn number if ``learner`` holds the turn now, else ``None``. Never blocks."""
        u = self._h.try_turn(_id("learner", learner))
        return None if u < 0 else u

    def pass_turn(self, learner: int) -> None:
        """Hand the turn to the next live learner. ``rtcore.SlotError`` if ``learner`` does not hold it
        (or lost it, skipped as dead)."""
        self._h.pass_turn(_id("learner", learner))

    def heartbeat(self, learner: int) -> None:
        """Tell the turnstile ``learner`` is alive (every other call does this too)."""
        self._h.heartbeat(_id("learner", learner))

    def leave(self, learner: int) -> None:
        """Give the slot back (passing the turn first if it holds it)."""
        self._h.leave(_id("learner", learner))

    def stop(self) -> None:
        """Make every :meth:`wait_turn` return ``-1`` at once."""
        self._h.set_stop(True)

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._h.stopped

    @property
    def turn(self) -> int:
        """The current turn number."""
        return self._h.turn

    @property
    def holder(self) -> int | None:
        """The learner holding the current turn, or ``None``."""
        h = self._h.holder
        return None if h < 0 else h

    @property
    def live(self) -> int:
        """Live learners (M_live)."""
        return self._h.live

    @property
    def learners(self) -> list[int]:
        """Ids of the live learners, ascending."""
        return list(self._h.learners)

    @property
    def passes(self) -> int:
        """Turns passed on so far."""
        return int(self._h.passes)

    @property
    def skips(self) -> int:
        """Turns taken away from dead holders."""
        return int(self._h.skips)

    @property
    def n_learners(self) -> int:
        """Learner slots (ids ``0 .. n_learners - 1``)."""
        return self._h.n_learners

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds of silence after which the holder of the turn is skipped."""
        return self._h.heartbeat_timeout_ns * 1e-9
