"""Bad sizes, corrupted segments, failing constructors, bad arguments and concurrent close():
every one ends in a clear Python exception, never a crash, a wrong answer or a leaked segment.

Each case here crashed (segfault, bus error), leaked, or was silently accepted before the checks it
tests existed (issue 11). Cases that could crash the interpreter run in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rtcore
from conftest import SHM_PREFIX, shm_segments
from rtcore import ActionBoard, ObsBoard, ParamStore, ReplayBuffer, StaggerSchedule, Turnstile
from rtcore.shared.shared_array import SharedArray

PYBIND_DUMP = "incompatible function arguments"


# --- 1. checked size arithmetic -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ReplayBuffer(2**62, (84, 84)), "capacity is too large"),  # reported 8 KiB; add segfaulted
        (lambda: ReplayBuffer(10, (2**32, 2**32)), "obs_shape is too large"),
        (lambda: ReplayBuffer(2**62 + 1, (4,), obs_dtype="uint16", frame_stack=4, streams=3, n_step=1),
         "capacity is too large"),  # two adds gave a bus error
        (lambda: ReplayBuffer(2**64, (4,)), "capacity must be below 2\\*\\*63"),
        (lambda: ReplayBuffer(100, (2**63,)), "obs_shape has a size above"),
        (lambda: ObsBoard((2**32, 2**32)), "obs_shape is too large"),
        (lambda: ObsBoard((2**31, 2**31), "float64"), "obs_shape is too large"),
        (lambda: SharedArray((2**32, 2**32)), "shape is too large"),
        (lambda: SharedArray((2**62, 4), "float64"), "shape is too large"),
        (lambda: ParamStore(2**64), "numel must be at most"),
        (lambda: ParamStore(2**40, "float64"), "numel too large"),
        (lambda: StaggerSchedule(3, 1e12), "tau_max must be at most"),
        (lambda: StaggerSchedule(3, 0.1, heartbeat_timeout=1e300), "heartbeat_timeout must be at most"),
        (lambda: Turnstile(2, heartbeat_timeout=1e12), "heartbeat_timeout must be at most"),
    ],
)
def test_sizes_that_overflow_are_refused_and_leave_no_segment(make, match):
    before = shm_segments()
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert PYBIND_DUMP not in str(info.value)
    assert shm_segments() == before


# --- 3. no segment left by a constructor that raises ----------------------------------------------


def test_a_constructor_that_raises_leaves_nothing_in_dev_shm():
    def all_ours() -> set[str]:
        return {n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX)}

    before = all_ours()
    for make in (
        lambda: ObsBoard((2**32, 2**32)),  # raised after creating its segment, which stayed
        lambda: ObsBoard((4,), "object"),
        lambda: SharedArray((2**33, 2**33), "uint8"),
        lambda: ReplayBuffer(2**62, (84, 84)),
        lambda: ParamStore(10, buffers=1),
        lambda: StaggerSchedule(0, 0.1),
        lambda: StaggerSchedule(2, 0.1, spin=-1.0),  # checked after creating its segment before
    ):
        with pytest.raises((ValueError, TypeError)):
            make()
        assert all_ours() == before


# --- 2. a full layout check on attach --------------------------------------------------------------


def _patch(name: str, offset: int, value: int, width: int = 8) -> None:
    with open(f"/dev/shm/{name}", "r+b") as fh:
        fh.seek(offset)
        fh.write(value.to_bytes(width, "little", signed=value < 0))


PARAMS = 64  # the header's layout parameters start here (csrc/shm/segment.h)


@pytest.mark.parametrize(
    "field,offset,value",
    [
        ("capacity", 0, 10**9),          # Params.capacity: sample walked past the segment
        ("slots_per_stream", 8, 10**6),
        ("frame_bytes", 16, 10**6),
        ("total_bytes", 48, 64),          # an understated size that would pass a size check
        ("streams", 56, 1000),
        ("frame_stack", 60, 0),
        ("n_step", 64, 999),
        ("ndim", 68, 9),
    ],
)
def test_a_replay_segment_with_a_patched_header_is_refused(field, offset, value):
    with ReplayBuffer(4 * 30, (6, 5), frame_stack=4, streams=2, n_step=3) as buf:
        for t in range(20):
            buf.add(t % 2, np.full((6, 5), t, np.uint8), t, 1.0, False, False)
        _patch(buf.name, PARAMS + offset, value, 8 if offset < 56 else 4)
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            ReplayBuffer.attach(buf.name)


def test_other_segments_with_patched_headers_are_refused():
    with ObsBoard((4, 4), frame_stack=2) as ob:
        _patch(ob.name, PARAMS + 96, 2**31, 4)  # ObsParams.frame_stack: 2 * 2**31 slots wrapped to 0
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            ObsBoard.attach(ob.name)
    with ObsBoard((4, 4)) as ob:
        _patch(ob.name, PARAMS + 8, 2**40)  # ArraySpec.shape[0]
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            ObsBoard.attach(ob.name)
    with SharedArray((3,), "float32") as sa:
        _patch(sa.name, PARAMS + 72, int.from_bytes(b"garbage!", "little"))  # dtype string, unterminated
        _patch(sa.name, PARAMS + 80, int.from_bytes(b"garbage!", "little"))
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            SharedArray.attach(sa.name)
    with ActionBoard(max_workers=4) as ab:
        _patch(ab.name, PARAMS, 2**20, 4)  # max_workers
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            ActionBoard.attach(ab.name)
    with StaggerSchedule(2, 0.1) as s:
        _patch(s.name, PARAMS, 0, 4)  # n_workers
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            StaggerSchedule.attach(s.name)
    with Turnstile(2) as ts:
        _patch(ts.name, PARAMS, 10**6, 4)  # n_learners
        with pytest.raises(rtcore.LayoutError, match="corrupt"):
            Turnstile.attach(ts.name)
    with ReplayBuffer(64, (2,)) as buf:
        _patch(buf.name, 24, 1 << 20)  # Header.payload_size
        with pytest.raises(rtcore.LayoutError, match="payload"):
            ReplayBuffer.attach(buf.name)


# --- 4 and 5. typed checks, finiteness and ranges --------------------------------------------------


def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert PYBIND_DUMP not in str(info.value)


def test_replay_arguments_are_checked_by_name():
    with ReplayBuffer(100, (4,), frame_stack=2, streams=2, n_step=2) as buf:
        o = np.zeros(4, np.uint8)
        buf.add(0, o, 1, 1.0, False, False)
        before = (buf.head(0), buf.head(1))
        _raises(ValueError, "action must be", buf.add, 0, o, 2**63, 0.0, False, False)
        _raises(ValueError, "action must be", buf.add, 0, o, np.uint64(2**63 + 5), 0.0, False, False)
        _raises(ValueError, "action must be >= 0, got -1", buf.add, 0, o, -1, 0.0, False, False)
        _raises(ValueError, "reward must be finite, got nan", buf.add, 0, o, 1, float("nan"), False, False)
        _raises(ValueError, "reward must be finite", buf.add, 0, o, 1, float("-inf"), False, False)
        _raises(ValueError, "reward must fit a float32", buf.add, 0, o, 1, 1e300, False, False)
        _raises(ValueError, "delay must be >= 0, got -1", buf.add, 0, o, 1, 0.0, False, False, delay=-1)
        _raises(ValueError, "delay must be in", buf.add, 0, o, 1, 0.0, False, False, delay=2**40)
        _raises(TypeError, r"obs must be a numpy array of shape \(4,\)", buf.add, 0, [0, 0, 0, 0], 1, 0.0, False, False)
        _raises(ValueError, "next_obs must be a numpy array", buf.add, 0, o, 1, 0.0, True, False, next_obs=[1, 2, 3, 4])
        _raises(TypeError, "terminated must be a bool", buf.add, 0, o, 1, 0.0, "yes", False)
        _raises(TypeError, "reward must be a float", buf.add, 0, o, 1, "1.0", False, False)
        _raises(IndexError, "stream", buf.add, 2**70, o, 1, 0.0, False, False)
        _raises(IndexError, "stream 5 is out of range", buf.head, 5)
        _raises(ValueError, "batch_size must be <= capacity", buf.sample, 2**70)
        f = np.zeros(2, bool)
        obs2 = np.zeros((2, 4), np.uint8)
        _raises(ValueError, "action must be in", buf.add_batch, obs2, np.array([1, 2**63 + 5], np.uint64), [0, 0], f, f)
        _raises(ValueError, "action must be in", buf.add_batch, obs2, [1, -1], [0, 0], f, f)
        _raises(ValueError, "reward must be finite", buf.add_batch, obs2, [1, 1], [0.0, np.nan], f, f)
        _raises(ValueError, "delay must be in", buf.add_batch, obs2, [1, 1], [0, 0], f, f, delay=[0, -3])
        _raises(TypeError, "obs must be a numpy array", buf.add_batch, [[0] * 4] * 2, [1, 1], [0, 0], f, f)
        assert (buf.head(0), buf.head(1)) == before  # nothing refused was written


def test_board_param_and_schedule_arguments_are_checked_by_name():
    with ObsBoard((2, 2)) as ob:
        _raises(TypeError, "frame must be a numpy array", ob.publish, [[0, 0], [0, 0]], 0)
        _raises(ValueError, "step must be below", ob.publish, np.zeros((2, 2), np.uint8), 2**63)
        _raises(TypeError, "out must be a numpy array", ob.read, out=[1])
        _raises(ValueError, "timeout must be finite", ob.wait_step, 0, timeout=float("nan"))
        _raises(ValueError, "timeout must be >= 0", ob.wait_step, 0, timeout=-1)
        _raises(ValueError, "after must be in", ob.wait_step, 2**64, timeout=0)
        _raises(ValueError, "spin must be at most", ob.wait_step, 0, timeout=0, spin=1e12)
    with ActionBoard(max_workers=2) as ab:
        _raises(ValueError, "action must be in", ab.post, 2**63, 0, 0)
        _raises(ValueError, "worker must be in", ab.post, 0, 0, 2**40)
        _raises(TypeError, "name must be a str", ActionBoard.attach, 3)
    with ParamStore(8) as ps:
        v = ps.publish(np.ones(8, np.float32))
        _raises(ValueError, "non-finite value", ps.publish, np.full(8, np.nan, np.float32))
        _raises(ValueError, "non-finite value", ps.publish, [np.ones(4, np.float32), np.array([1, 2, np.inf, 4], np.float32)])
        assert ps.version == v  # nothing published
        _raises(ValueError, "timeout must be finite", ps.pin, timeout=float("nan"))
        _raises(ValueError, "timeout must be finite", ps.pin_buffer, timeout=float("inf"))
        _raises(ValueError, "timeout must be >= 0", ps.publish, np.ones(8, np.float32), timeout=-1.0)
        _raises(TypeError, "must be a numpy array or a torch tensor", ps.publish, [1.0] * 8)
        _raises(IndexError, "buffer", ps.buffer_address, 2**70)
        _raises(TypeError, "buffer must be an int", ps.buffer_view, "0")
    with StaggerSchedule(2, 0.1) as s:
        w = s.join()
        _raises(ValueError, "timeout must be finite", s.wait_turn, w, timeout=float("nan"))
        _raises(ValueError, "timeout must be >= 0", s.wait_publish, w, timeout=-1)
        _raises(ValueError, "duration must be at most", s.report, w, 1e12)
        _raises(ValueError, "duration must be finite", s.report, w, float("nan"))
        _raises(IndexError, "worker", s.wait_turn, 2**40, timeout=0.1)
        _raises(IndexError, "worker", s.join, 2**40)
        _raises(ValueError, "mode must be one of", StaggerSchedule, 2, 0.1, mode=["max"])
    with Turnstile(2) as ts:
        j = ts.join()
        _raises(ValueError, "timeout must be finite", ts.wait_turn, j, timeout=float("inf"))
        _raises(IndexError, "learner", ts.pass_turn, 2**40)
    _raises(ValueError, "tau_theta_max / tau_m", rtcore.n_star, 1e5, 1e-300)
    _raises(ValueError, "period must be at most", rtcore.Timer, 1e12)
    _raises(ValueError, "realtime priority must be in", rtcore.Timer, 0.01, realtime=2**40)
    _raises(TypeError, "name must be a str", ReplayBuffer, 10, (2,), name=5)


def test_a_huge_timeout_waits_forever_instead_of_overflowing():
    with Turnstile(1) as ts:
        j = ts.join()
        assert ts.wait_turn(j, timeout=1e15) >= 0  # the only learner holds the turn at once


# --- 7. close() while another thread is inside a GIL-free call --------------------------------------


CONCURRENT_CLOSE = textwrap.dedent(
    """
    import threading, time
    import numpy as np
    from rtcore import ParamStore, ReplayBuffer, StaggerSchedule, Turnstile

    def run(name, call, close):
        inside, out = threading.Event(), []
        def target():
            inside.set()
            try:
                call()
                out.append("returned")
            except Exception as e:  # the call in flight finishes, or reports the close / its timeout
                out.append(type(e).__name__)
        t = threading.Thread(target=target)
        t.start()
        inside.wait()
        time.sleep(0.02)  # let it enter the GIL-free part (a longer wait only makes the race likelier)
        close()
        t.join(10)
        assert not t.is_alive(), name
        print(name, out[0], flush=True)

    # A sample of 4096 Atari stacks copies ~460 MB with the GIL released: close() lands in the middle.
    buf = ReplayBuffer(5000, (84, 84), frame_stack=4)
    for t in range(4500):
        buf.add(0, np.full((84, 84), t % 251, np.uint8), 1, 0.0, False, False)
    out = buf.empty_batch(4096)
    other = ReplayBuffer.attach(buf.name)
    run("replay.sample", lambda: [other.sample(4096, out=out) for _ in range(3)], other.close)
    buf.close()

    # pin() polls the store with the GIL released until a first version or its timeout.
    ps = ParamStore(1 << 16)
    reader = ParamStore.attach(ps.name)
    run("params.pin", lambda: reader.pin(timeout=0.3), reader.close)
    ps.close()

    # Worker 1 of 2 starts tau_max / 2 = 5 s later: its wait times out after 0.3 s, past the close.
    s = StaggerSchedule(2, 10.0)
    s.join(0)
    w = s.join(1)
    s.wait_turn(0, timeout=1.0)
    run("schedule.wait_turn", lambda: s.wait_turn(w, timeout=0.3), s.close)

    ts = Turnstile(2, heartbeat_timeout=30.0)
    ts.join(0)
    j = ts.join(1)
    run("turnstile.wait_turn", lambda: ts.wait_turn(j, timeout=0.3), ts.close)
    print("survived", flush=True)
    """
)


@pytest.mark.timeout(60)
def test_close_while_another_thread_is_inside_a_call_never_unmaps_under_it():
    r = subprocess.run([sys.executable, "-c", CONCURRENT_CLOSE], capture_output=True, text=True, timeout=50,
                       env=dict(os.environ))
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in r.stdout.split("\n") if " " in line)
    assert lines["replay.sample"] in ("returned", "ClosedError"), r.stdout  # closed, on a later call
    assert lines["params.pin"] in ("ClosedError", "TimeoutError"), r.stdout
    assert lines["schedule.wait_turn"] == "TimeoutError", r.stdout
    assert lines["turnstile.wait_turn"] == "TimeoutError", r.stdout
    assert "survived" in r.stdout
