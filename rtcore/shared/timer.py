"""Precise periodic timing on the wall clock.

:class:`Timer` ticks at absolute deadlines ``start + k * period`` on ``CLOCK_MONOTONIC`` (the clock
every rtcore process shares; :func:`monotonic` reads it). Each :meth:`Timer.wait` sleeps with
``clock_nanosleep(TIMER_ABSTIME)`` to ``spin`` seconds before the deadline, then spins, with the GIL
released. A caller that comes back late past whole ticks gets the newest due tick at once; the ticks it
missed are counted as overruns and skipped, never replayed in a burst.

Example, an environment loop at 59.7275 Hz::

    timer = rtcore.Timer(1 / 59.7275)
    while (k := timer.wait()) >= 0:      # -1 once timer.stop() is called from another thread
        step_env(k)
    print(timer.stats())                 # ticks, overruns, lateness p50/p99/max in seconds
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from rtcore import _core
from rtcore._validate import MAX_SECONDS, index, ns, seconds

__all__ = ["Timer", "monotonic", "monotonic_ns", "sleep_until"]

DEFAULT_SPIN = 200e-6
DEFAULT_RT_PRIORITY = 10


def _real(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}") from None


def monotonic() -> float:
    """``CLOCK_MONOTONIC`` in seconds: the same clock as the C++ core and every :class:`Timer`.

    ``time.monotonic()`` reads the same clock on Linux; this one is here so the code that schedules
    against rtcore's deadlines names the clock it means.
    """
    return _core.monotonic()


def monotonic_ns() -> int:
    """``CLOCK_MONOTONIC`` in integer nanoseconds."""
    return _core.monotonic_ns()


def sleep_until(deadline: float, spin: float = DEFAULT_SPIN) -> None:
    """Sleep until ``deadline`` (``CLOCK_MONOTONIC`` seconds, see :func:`monotonic`), then return.

    Sleeps with ``clock_nanosleep(TIMER_ABSTIME)`` to ``spin`` seconds before the deadline and spins
    the rest (``spin=0``: plain absolute sleep, no spin). Never returns early. The GIL is released;
    Ctrl-C raises ``KeyboardInterrupt`` within 50 ms. A deadline in the past returns at once.
    """
    d = _real("deadline", deadline)
    if not math.isfinite(d) or d > 9e9:
        raise ValueError(f"deadline must be a finite CLOCK_MONOTONIC time in seconds (see monotonic()), got {deadline!r}")
    _core.sleep_until_ns(max(0, ns(d)), ns(seconds("spin", spin, positive=False, hi=MAX_SECONDS)))


DEFAULT_HANDOFF = 100e-6


class Timer:
    """A periodic timer on absolute deadlines ``start + k * period`` (``CLOCK_MONOTONIC`` seconds).

    Args:
        period: seconds between ticks (> 0).
        spin: seconds before each deadline at which sleeping stops and spinning starts (>= 0; 0 means
            a plain ``clock_nanosleep`` to the deadline, whose accuracy is the kernel's wake-up latency).
        start: the deadline of tick 0, in :func:`monotonic` seconds; ``None``: now (the first
            ``wait()`` returns at once).
        realtime: ``True`` (priority 10) or an ``int`` priority: set timer slack to 1 ns and
            ``SCHED_FIFO`` for the *calling thread*, so create the timer in the thread that waits on
            it. Refusals (no ``CAP_SYS_NICE``) are reported in :attr:`realtime_status`, not raised.
        handoff: seconds before each deadline at which the C++ wait returns to Python, which spins
            the rest of the way (GIL held) and records the lateness it sees. Returning from a long
            sleep straight into the interpreter costs tens of microseconds of cold caches *after* the
            deadline; paying it before the deadline makes the tick land within ~1 us as seen by the
            caller (bench/timer.py). 0 disables it.

    One thread waits on a timer at a time; :meth:`stop` and :meth:`stats` may be called from any
    thread.
    """

    def __init__(
        self,
        period: float,
        spin: float = DEFAULT_SPIN,
        start: float | None = None,
        realtime: bool | int = False,
        handoff: float = DEFAULT_HANDOFF,
    ) -> None:
        p = seconds("period", period, positive=True, hi=MAX_SECONDS)
        s = seconds("spin", spin, positive=False, hi=MAX_SECONDS)
        h = seconds("handoff", handoff, positive=False, hi=MAX_SECONDS)
        if h >= p:
            raise ValueError(f"handoff must be shorter than the period ({p} s), got {handoff!r}")
        period_ns = ns(p)
        if period_ns < 1:
            raise ValueError(f"period must be at least 1 ns, got {period!r}")
        if start is None:
            start_ns = _core.monotonic_ns()
        else:
            st = _real("start", start)
            if not math.isfinite(st) or st < 0 or st > 9e9:
                raise ValueError(f"start must be a finite CLOCK_MONOTONIC time >= 0 (see rtcore.shared.timer.monotonic()), got {start!r}")
            start_ns = ns(st)
        if isinstance(realtime, bool):
            priority = DEFAULT_RT_PRIORITY if realtime else None
        elif isinstance(realtime, int):
            if not 1 <= realtime <= 99:
                raise ValueError(f"realtime priority must be in [1, 99] (SCHED_FIFO), got {realtime}")
            priority = realtime
        else:
            raise TypeError(f"realtime must be a bool or an int SCHED_FIFO priority, got {type(realtime).__name__}")
        self._t = _core.Timer(period_ns, ns(s), start_ns, ns(h))
        self._handoff_ns = ns(h)
        self._start_ns = start_ns
        self._period_ns = period_ns
        self._realtime_status = "off" if priority is None else _core.apply_realtime(priority)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the next tick's deadline and return its index ``k``; ``-1`` once stopped.

        If the caller is late past whole ticks, those ticks are counted as overruns and skipped, and the
        newest due tick is returned at once. ``timeout`` (seconds): raise ``TimeoutError`` if the tick
        is not due by then (the tick is not consumed). One thread waits on a timer: a second concurrent
        waiter gets ``rtcore.BusyError``. The GIL is released; Ctrl-C works.
        """
        if timeout is not None:
            timeout = seconds("timeout", timeout, positive=False)
        k = self._t.wait(timeout)
        if k >= 0 and self._handoff_ns:
            # The last stretch in the interpreter (see `handoff`): the caller's code is hot at the deadline.
            deadline = self._start_ns + k * self._period_ns
            clock = _core.monotonic_ns
            now = clock()
            while now < deadline:
                now = clock()
            self._t.complete(k, now)
        return k

    def stop(self) -> None:
        """Make a blocked :meth:`wait` (and every later one) return ``-1`` promptly (within 10 ms)."""
        self._t.stop()

    def resume(self) -> None:
        """Undo :meth:`stop`: later waits tick again, on the same grid of deadlines."""
        self._t.resume()

    @property
    def waiting(self) -> bool:
        """True while a thread is blocked in :meth:`wait`."""
        return self._t.waiting

    @property
    def stopped(self) -> bool:
        """True between :meth:`stop` and :meth:`resume`."""
        return self._t.stopped

    def stats(self) -> dict[str, float | int]:
        """Counters since creation or :meth:`reset_stats`.

        ``ticks`` (returned by wait), ``overruns`` (missed entirely, skipped), ``late`` (returned at
        once because the caller came back after the deadline), and ``lateness_p50``, ``lateness_p99``,
        ``lateness_max``, ``lateness_mean`` in seconds: how long after its deadline each tick was
        returned (a fixed log-linear histogram, < 1.6 % relative error; the max is exact).
        """
        return self._t.stats()

    def reset_stats(self) -> None:
        """Zero the counters (call it between waits, from the waiting thread)."""
        self._t.reset_stats()

    def deadline(self, k: int) -> float:
        """The deadline of tick ``k`` in :func:`monotonic` seconds."""
        i = index("k", k)
        if i < 0 or i > (2**63 - 1 - self._start_ns) // self._period_ns:
            raise ValueError(f"k must be in [0, {(2**63 - 1 - self._start_ns) // self._period_ns}], got {i}")
        return self._t.deadline_ns(i) * 1e-9

    @property
    def period(self) -> float:
        """Seconds between ticks."""
        return self._t.period_ns * 1e-9

    @property
    def spin(self) -> float:
        """Seconds before each deadline at which the wait stops sleeping and spins."""
        return self._t.spin_ns * 1e-9

    @property
    def start(self) -> float:
        """The deadline of tick 0 (:func:`monotonic` seconds)."""
        return self._t.start_ns * 1e-9

    @property
    def next_tick(self) -> int:
        """The index the next :meth:`wait` aims for, unless the caller is late past it."""
        return self._t.next_tick

    @property
    def last_lateness(self) -> float:
        """Seconds after its deadline that the last returned tick was returned (0.0 before the first)."""
        return self._t.last_lateness_ns * 1e-9

    @staticmethod
    def now() -> float:
        """:func:`monotonic`: the clock the deadlines are on."""
        return _core.monotonic()

    @property
    def realtime_status(self) -> str:
        """``"off"``, ``"on (SCHED_FIFO prio N, timerslack 1 ns)"`` or ``"refused: <reason>"``."""
        return self._realtime_status

    def __repr__(self) -> str:
        return f"Timer(period={self.period!r}, spin={self.spin!r}, start={self.start!r}, realtime={self._realtime_status!r})"
