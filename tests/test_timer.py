"""rtcore.Timer and rtcore.shared.timer: counts, never-early, overruns, stop, timeouts, Ctrl-C, bad inputs.

No assertion here is about speed: lateness figures are in bench/timer.py.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import rtcore
from rtcore.shared import timer as rt_timer


def test_ticks_are_never_early_and_every_index_is_accounted_for() -> None:
    t = rtcore.Timer(0.002)
    prev, prev_over = -1, 0
    for _ in range(40):
        k = t.wait()
        now = rt_timer.monotonic()
        assert now >= t.deadline(k) - 1e-9  # never early (1 ns of float rounding)
        st = t.stats()
        assert k - prev - 1 == st["overruns"] - prev_over  # each index returned once or counted as missed
        prev, prev_over = k, st["overruns"]
    assert 0.0 <= t.last_lateness <= t.stats()["lateness_max"]
    st = t.stats()
    assert st["ticks"] == 40
    assert set(st) >= {"ticks", "overruns", "late", "lateness_p50", "lateness_p99", "lateness_max", "lateness_mean"}
    assert 0 <= st["lateness_p50"] <= st["lateness_p99"] <= st["lateness_max"]
    assert st["lateness_mean"] >= 0


def test_sleeping_past_ticks_counts_overruns_without_a_burst() -> None:
    period = 0.002
    t = rtcore.Timer(period, spin=100e-6)
    k0 = t.wait()
    time.sleep(3.5 * period)  # at least ticks k0+1 and k0+2 are missed entirely
    before = rt_timer.monotonic()
    k1 = t.wait()
    assert math.floor((before - t.deadline(k0)) / period) - 1 >= 2
    assert t.stats()["overruns"] == k1 - k0 - 1 >= 2
    assert t.stats()["late"] >= 1
    k2 = t.wait()  # back on the grid: waits for its own deadline
    assert k2 >= k1 + 1
    assert rt_timer.monotonic() >= t.deadline(k2) - 1e-9
    assert t.stats()["ticks"] == 3


def test_start_in_the_future_and_properties() -> None:
    start = rt_timer.monotonic() + 0.005
    t = rtcore.Timer(0.001, spin=0.0, start=start)
    assert t.period == pytest.approx(0.001)
    assert t.start == pytest.approx(start, abs=1e-9)
    assert t.spin == 0.0
    assert t.next_tick == 0
    assert t.wait() == t.stats()["overruns"]  # 0, unless this process was descheduled past tick 0
    assert rt_timer.monotonic() >= start - 1e-9
    assert t.wait() == 1 + t.stats()["overruns"]  # 1, unless this process was descheduled past tick 1
    assert t.realtime_status == "off"
    assert "Timer(period=" in repr(t)
    t.reset_stats()
    assert t.stats()["ticks"] == 0


def test_stop_from_another_thread_returns_minus_one() -> None:
    t = rtcore.Timer(60.0, start=rt_timer.monotonic() + 60.0)
    got: list[int] = []
    th = threading.Thread(target=lambda: got.append(t.wait()))
    th.start()
    time.sleep(0.05)
    t.stop()
    th.join(timeout=10)
    assert not th.is_alive()
    assert got == [-1]
    assert t.stopped
    assert t.wait() == -1
    t.resume()
    assert not t.stopped
    with pytest.raises(TimeoutError):
        t.wait(timeout=0.001)


def test_wait_timeout_does_not_consume_the_tick() -> None:
    t = rtcore.Timer(0.5, start=rt_timer.monotonic() + 0.2)
    with pytest.raises(TimeoutError):
        t.wait(timeout=0.01)
    assert t.stats()["ticks"] == 0
    assert t.next_tick == 0
    assert t.wait(timeout=5.0) == 0


def test_concurrent_waiters_are_refused() -> None:
    t = rtcore.Timer(60.0, start=rt_timer.monotonic() + 60.0)
    th = threading.Thread(target=t.wait)
    th.start()
    deadline = time.monotonic() + 10
    while not t.waiting:  # the thread is inside wait(); no sleep that hopes
        assert time.monotonic() < deadline, "the waiting thread never entered wait()"
        time.sleep(0.001)
    time.sleep(0.12)  # across at least two of its 50 ms slices: the claim holds for the whole wait
    try:
        with pytest.raises(rtcore.BusyError, match="already running"):
            t.wait()
    finally:
        t.stop()
        th.join(timeout=10)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"period": 0}, ValueError, "period must be > 0"),
        ({"period": -0.01}, ValueError, "period must be > 0"),
        ({"period": float("nan")}, ValueError, "finite"),
        ({"period": "fast"}, TypeError, "period must be a number"),
        ({"period": True}, TypeError, "period must be a number"),
        ({"period": 0.01, "spin": -1e-6}, ValueError, "spin must be >= 0"),
        ({"period": 0.01, "start": -1.0}, ValueError, "start must be"),
        ({"period": 0.01, "realtime": "yes"}, TypeError, "realtime must be"),
        ({"period": 0.01, "realtime": 1000}, ValueError, "priority must be in"),
    ],
)
def test_bad_timer_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        rtcore.Timer(**kwargs)


def test_bad_wait_timeout() -> None:
    t = rtcore.Timer(0.01)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        t.wait(timeout=-1)


def test_realtime_status_is_reported_on_or_refused() -> None:
    # In a thread of its own: SCHED_FIFO would otherwise stay on the test runner's main thread.
    out: list[str] = []
    th = threading.Thread(target=lambda: out.append(rtcore.Timer(0.01, realtime=True).realtime_status))
    th.start()
    th.join(timeout=10)
    assert out and (out[0].startswith("on (SCHED_FIFO prio 10, timerslack 1 ns)") or out[0].startswith("refused: "))


def test_monotonic_is_the_clock_of_time_monotonic() -> None:
    a = rt_timer.monotonic()
    b = time.monotonic()
    c = rt_timer.monotonic()
    assert a - 1e-6 <= b <= c + 1e-6
    assert rt_timer.monotonic_ns() >= int(c * 1e9) - 1000


def test_sleep_until_is_never_early_and_returns_at_once_for_the_past() -> None:
    for spin in (0.0, 200e-6):
        deadline = rt_timer.monotonic() + 0.003
        rt_timer.sleep_until(deadline, spin=spin)
        assert rt_timer.monotonic() >= deadline - 1e-9
    rt_timer.sleep_until(rt_timer.monotonic() - 5.0)
    rt_timer.sleep_until(0.0)
    with pytest.raises(ValueError, match="spin must be >= 0"):
        rt_timer.sleep_until(rt_timer.monotonic(), spin=-1)
    with pytest.raises(ValueError, match="finite"):
        rt_timer.sleep_until(float("inf"))
    with pytest.raises(ValueError, match="finite"):
        rt_timer.sleep_until(1e300)


_CTRL_C_CHILD = """
import sys, rtcore
from rtcore.shared import timer
what = sys.argv[1]
print("ready", flush=True)
try:
    if what == "timer":
        rtcore.Timer(3600.0, start=timer.monotonic() + 3600.0).wait()
    elif what == "sleep_until":
        timer.sleep_until(timer.monotonic() + 3600.0)
    elif what == "wait_step":
        b = rtcore.ObsBoard((4,))
        try:
            b.wait_step(-1, timeout=3600.0)
        finally:
            b.close()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("what", ["timer", "sleep_until", "wait_step"])
def test_ctrl_c_interrupts_a_long_wait(what: str, tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_CHILD, what],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it enter the wait (a signal before that is handled the same way)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3, err
        assert "interrupted" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_handoff_longer_than_period_is_refused_and_zero_disables_it():
    with pytest.raises(ValueError, match="handoff must be shorter than the period"):
        rtcore.Timer(0.001, handoff=0.002)
    with pytest.raises(ValueError, match="handoff"):
        rtcore.Timer(0.001, handoff=-1e-6)
    for handoff in (0.0, 200e-6):
        t = rtcore.Timer(0.002, handoff=handoff)
        for _ in range(20):
            k = t.wait()
            assert rtcore.shared.timer.monotonic_ns() >= t.deadline(k) * 1e9 - 1e3  # never early (1 us: float seconds)
        assert t.stats()["ticks"] == 20
