"""StaggerSchedule and Turnstile in one process: API, bad inputs, the schedule's numbers, waits, errors."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

import rtcore
from rtcore.shared.sched import StaggerSchedule, Turnstile


@pytest.fixture
def sched():
    s = StaggerSchedule(8, 0.05, heartbeat_timeout=5.0)
    yield s
    s.close()


def test_properties_and_targets(sched):
    assert sched.n_workers == 8 and sched.mode == "max" and sched.window == 32
    assert sched.tau_max == pytest.approx(0.05) and sched.mean_tau == pytest.approx(0.05)
    assert sched.live_workers == 0 and sched.workers == []
    ws = [sched.join() for _ in range(4)]
    assert ws == [0, 1, 2, 3]
    assert sched.live_workers == 4 and sched.workers == ws
    assert sched.action_interval == pytest.approx(0.05 / 4)
    assert sched.join(6) == 6
    with pytest.raises(rtcore.SlotError, match="taken by a live worker"):
        sched.join(6)
    sched.leave(6)
    sched.leave(6)  # harmless twice
    assert sched.workers == ws
    assert sched.restaggers >= 5


def test_report_returns_the_wait_before_publishing_and_never_negative(sched):
    w = sched.join()
    assert sched.wait_turn(w, timeout=1.0)
    time.sleep(0.01)  # "inference"
    t0 = time.monotonic()
    remaining = sched.report(w, 0.01)  # the turn started >= 10 ms ago; publish tau_max after it
    assert 0 <= remaining <= 0.04 + 1e-3
    assert sched.wait_publish(w, timeout=1.0)
    assert time.monotonic() - t0 >= remaining - 1e-3
    # A new maximum: publish at once (the paper's "do not sleep"), tau_max follows.
    assert sched.wait_turn(w, timeout=1.0)
    time.sleep(0.08)
    assert sched.report(w, 0.08) == 0.0
    assert sched.tau_max == pytest.approx(0.08)
    assert sched.last_inference(w) == pytest.approx(0.08)
    assert sched.reports == 2


def test_paper_pushback_reaches_the_other_workers():
    sched = StaggerSchedule(8, 0.05, heartbeat_timeout=5.0, pushback="paper")
    assert sched.pushback == "paper"
    a, b, c = sched.join(), sched.join(), sched.join()
    for w in (a, b, c):  # everyone takes its start offset (only a's turn is now)
        sched._h.poll_turn(w)
    assert sched.wait_turn(a, timeout=1.0)
    sched.report(a, 0.05 + 0.03)  # 30 ms over tau_max with N = 3: dist(b, a) = 2, dist(c, a) = 1
    assert sched.pending_delay(a) == 0
    assert sched.pending_delay(b) == pytest.approx(2 * 0.03 / 3, abs=1e-8)
    assert sched.pending_delay(c) == pytest.approx(1 * 0.03 / 3, abs=1e-8)
    assert sched.pushbacks == 1
    sched.close()


def test_lattice_pushback_restaggers_instead(sched):
    assert sched.pushback == "lattice"
    a, b = sched.join(), sched.join()
    for w in (a, b):
        sched._h.poll_turn(w)
    assert sched.wait_turn(a, timeout=1.0)
    before = sched.restaggers
    sched.report(a, 0.08)
    assert sched.restaggers == before + 1 and sched.pushbacks == 1
    assert sched.pending_delay(b) == 0
    with pytest.raises(ValueError, match="pushback must be one of"):
        StaggerSchedule(2, 0.1, pushback="other")


def test_waits_time_out_with_a_clear_message_and_stop_wakes_them():
    s = StaggerSchedule(2, 2.0)
    try:
        a, b = s.join(), s.join()
        assert s.wait_turn(a, timeout=0.5)
        with pytest.raises(TimeoutError, match="turn did not come within the timeout"):
            s.wait_turn(b, timeout=0.05)  # b starts tau_max / 2 = 1 s later
        s.report(a, 0.01)
        with pytest.raises(TimeoutError, match="may publish only in"):
            s.wait_publish(a, timeout=0.05)
        threading.Timer(0.1, s.stop).start()
        t0 = time.monotonic()
        assert s.wait_turn(b, timeout=5.0) is False
        assert time.monotonic() - t0 < 2.0
        assert s.wait_publish(a) is False and s.stopped
        s.resume()
        assert not s.stopped
    finally:
        s.close()


def test_worker_must_join_through_this_handle(sched):
    other = StaggerSchedule.attach(sched.name)
    try:
        w = other.join()
        with pytest.raises(rtcore.SlotError, match="has not joined"):
            sched.wait_turn(w, timeout=0.1)
        with pytest.raises(IndexError, match="out of range"):
            other.heartbeat(8)
    finally:
        other.close()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_workers=0), ValueError, "n_workers must be in"),
        (dict(n_workers=2.0), TypeError, "n_workers must be an int"),
        (dict(tau_max=0), ValueError, "tau_max must be"),
        (dict(tau_max="1"), TypeError, "tau_max must be a number"),
        (dict(mode="median"), ValueError, "mode must be one of"),
        (dict(window=0), ValueError, "window must be in"),
        (dict(heartbeat_timeout=-1), ValueError, "heartbeat_timeout must be"),
        (dict(tau_window=-1), ValueError, r"tau_window must be in \[0, 1024\], got -1"),
        (dict(tau_window=1025), ValueError, r"tau_window must be in \[0, 1024\], got 1025"),
        (dict(tau_window=1.0), TypeError, "tau_window must be an int"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        StaggerSchedule(**(dict(n_workers=4, tau_max=0.1) | kwargs))


def test_bad_call_arguments(sched):
    w = sched.join()
    with pytest.raises(ValueError, match="duration must be"):
        sched.report(w, -1.0)
    with pytest.raises(ValueError, match="timeout must be"):
        sched.wait_turn(w, timeout=-1)
    with pytest.raises(ValueError, match="worker must be >= 0"):
        sched.join(-2)


def test_pickles_as_its_name_and_closes(sched):
    s2 = pickle.loads(pickle.dumps(sched))
    try:
        assert s2.name == sched.name and not s2.owner
        s2.join()
        assert sched.live_workers == 1
    finally:
        s2.close()
    with pytest.raises(FileNotFoundError):
        StaggerSchedule.attach("rtcore-no-such-schedule")
    t = Turnstile(2)
    try:
        with pytest.raises(rtcore.LayoutError):
            StaggerSchedule.attach(t.name)
    finally:
        t.close()
    sched.close()
    with pytest.raises(rtcore.ClosedError, match="is closed"):
        sched.join()


def test_mean_mode_tracks_the_mean():
    s = StaggerSchedule(4, 0.2, mode="mean", window=4)
    try:
        w = s.join()
        for d in (0.01, 0.02, 0.03, 0.04, 0.05):
            s._h.poll_turn(w)
            s.report(w, d)
        assert s.mean_tau == pytest.approx(0.035, abs=1e-9)  # the last 4
        assert s.tau == pytest.approx(s.mean_tau) and s.tau_max == pytest.approx(0.2)
    finally:
        s.close()


def test_threads_run_the_worker_loop_and_leave_cleanly():
    s = StaggerSchedule(4, 0.02)
    stop = threading.Event()
    posts: list[int] = []

    def worker():
        w = s.join()
        while not stop.is_set():
            if not s.wait_turn(w, timeout=1.0):
                break
            time.sleep(0.005)
            s.report(w, 0.005)
            if not s.wait_publish(w, timeout=1.0):
                break
            posts.append(w)
        s.leave(w)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
    finally:
        stop.set()
        s.stop()
        for t in threads:
            t.join(5.0)
    assert not any(t.is_alive() for t in threads)
    assert s.live_workers == 0
    assert set(posts) == {0, 1, 2}
    # 0.5 s at one action per 20/3 ms is ~75; a descheduled test process gets fewer, never more than
    # one per worker per 20 ms plus the first round.
    assert 10 <= len(posts) <= 3 * (0.5 / 0.02 + 2)
    s.close()


# ---- Turnstile ---------------------------------------------------------------------------------


def test_turnstile_round_robin_in_one_process():
    with Turnstile(3) as ts:
        js = [ts.join() for _ in range(3)]
        assert ts.live == 3 and ts.learners == js
        for k in range(6):
            holders = [j for j in js if ts.try_turn(j) is not None]
            assert holders == [k % 3]
            assert ts.turn == k and ts.holder == k % 3
            ts.pass_turn(k % 3)
        with pytest.raises(rtcore.SlotError, match="does not hold"):
            ts.pass_turn(2)
        assert ts.wait_turn(0, timeout=1.0) == 6
        ts.leave(0)  # passes the turn on
        # Live learners {1, 2}: the next turn number congruent to rank(1) = 0 mod 2 after 6 is 8.
        assert ts.wait_turn(1, timeout=1.0) == 8 and ts.live == 2
        assert ts.passes >= 7


def test_turnstile_timeout_names_the_holder():
    with Turnstile(2, heartbeat_timeout=30.0) as ts:
        a, b = ts.join(), ts.join()
        assert ts.wait_turn(a, timeout=1.0) == 0
        with pytest.raises(TimeoutError, match="held by learner 0"):
            ts.wait_turn(b, timeout=0.1)
        threading.Timer(0.1, ts.stop).start()
        assert ts.wait_turn(b, timeout=5.0) == -1


def test_turnstile_bad_arguments():
    with pytest.raises(ValueError, match="n_learners must be in"):
        Turnstile(0)
    with pytest.raises(ValueError, match="heartbeat_timeout must be"):
        Turnstile(2, heartbeat_timeout=0)
    with Turnstile(2) as ts:
        with pytest.raises(IndexError):
            ts.wait_turn(5, timeout=0.1)
        with pytest.raises(rtcore.SlotError, match="has not joined"):
            ts.pass_turn(1)
        assert ts.join() == 0 and ts.join() == 1
        with pytest.raises(rtcore.SlotError, match="all 2 learner slots are taken"):
            ts.join()


def test_tau_window_forgets_a_stall_and_restaggers():
    s = StaggerSchedule(4, 0.05, tau_window=4, heartbeat_timeout=5.0)
    try:
        assert s.tau_window == 4 and rtcore.shared.sched.TAU_WINDOW_MAX == 1024
        ws = [s.join() for _ in range(4)]
        w = ws[0]
        s._h.poll_turn(w)
        s.report(w, 0.4)  # a stall: raised at once
        assert s.tau_max == pytest.approx(0.4) and s.action_interval == pytest.approx(0.1)
        before = s.restaggers
        for k in range(3):  # the stall is still in the last 4
            s._h.poll_turn(w)
            s.report(w, 0.05)
            assert s.tau_max == pytest.approx(0.4)
        s._h.poll_turn(w)
        s.report(w, 0.05)  # 4 normal reports: forgotten, re-staggered on 50 ms
        assert s.tau_max == pytest.approx(0.05) and s.action_interval == pytest.approx(0.0125)
        assert s.restaggers == before + 1
        a = StaggerSchedule.attach(s.name)
        assert a.tau_window == 4
        a.close()
    finally:
        s.close()
    paper = StaggerSchedule(2, 0.05)
    try:
        assert paper.tau_window == 0
        w = paper.join()
        paper._h.poll_turn(w)
        paper.report(w, 0.4)
        for _ in range(50):
            paper._h.poll_turn(w)
            paper.report(w, 0.05)
        assert paper.tau_max == pytest.approx(0.4)  # the paper's all-time maximum
    finally:
        paper.close()
