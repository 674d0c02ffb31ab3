"""Property-based fuzz of every public constructor and method of the shared objects and the timer.

Random argument types and values (ints far outside C ranges, NaN and infinities, strings, lists,
numpy arrays of every kind, numpy scalars) are thrown at each call. The property: only documented
Python exceptions come out, each with a message that is not pybind11's "incompatible function
arguments" dump, and the interpreter survives (a crash fails the whole run). The budget is fixed
(``max_examples``, ``derandomize=True``: the same examples every run), about 10-20 s in all.

Sizes are drawn from small values and from values so large they must be refused (or fail up front
with ENOSPC): never a size that would really allocate gigabytes. Timeouts are never ``None`` or huge,
so no call blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtcore
from rtcore import ActionBoard, ObsBoard, ParamStore, ReplayBuffer, StaggerSchedule, Turnstile
from rtcore.shared.shared_array import SharedArray

# What a bad argument may raise (LayoutError is a ValueError; OSError: /dev/shm is full).
ALLOWED = (ValueError, TypeError, IndexError, OverflowError, OSError, TimeoutError)
PYBIND_DUMP = "incompatible function arguments"

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

INTS = st.sampled_from([-(2**63) - 1, -(2**63), -(2**31), -1, 0, 1, 2, 3, 4, 5, 8, 64, 2**31 - 1, 2**31, 2**32,
                        2**40, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, 2**70])
FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1e-300, 1e-3, 0.5, 1.0, 1e12, 1e300])
# Timeouts that never block for long: nothing huge, no None.
TIMEOUTS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 0.001, True, "1", [], -1, 0])
def _array(shape, dtype, fill):
    if np.dtype(dtype).kind not in "biufc":
        return np.empty(shape, dtype)
    with np.errstate(all="ignore"):
        return np.full(shape, fill).astype(dtype, copy=False)


ARRAYS = st.builds(
    _array,
    st.sampled_from([(), (0,), (1,), (2,), (4,), (2, 2), (3, 2), (2, 3), (1, 4), (4, 1), (2, 2, 2)]),
    st.sampled_from(["uint8", "int8", "int32", "int64", "uint64", "float16", "float32", "float64", "bool",
                     "complex64", "object", "U2", ">u2"]),
    st.sampled_from([0, 1, -1, 255, 2**63 - 1]),
)
SCALARS = st.sampled_from([np.uint64(2**63 + 5), np.int64(-1), np.float32("nan"), np.float64(1e300), np.bool_(True),
                           np.int8(3), np.float32(0.5)])
WEIRD = st.one_of(
    st.none(), st.booleans(), INTS, FLOATS, SCALARS, ARRAYS,
    st.sampled_from(["", "x", "uint8", "max", "84", "a/b", "x" * 300, b"bytes"]),
    st.lists(st.sampled_from([0, 1, -1, 2**70, 0.5, "x"]), max_size=3),
    st.tuples(INTS, INTS),
    st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4])),
    st.sampled_from([object(), {}, {"a": 1}, set(), 1j]),
)


def _call(fn, *args, **kwargs):
    """Calls fn; a result or an allowed exception with a clean message passes; anything else fails."""
    try:
        return fn(*args, **kwargs)
    except ALLOWED as e:
        assert PYBIND_DUMP not in str(e), f"{fn.__qualname__}{args}{kwargs}: pybind11 dump: {e}"
        return None
    except Exception as e:  # noqa: BLE001 - the property: nothing else escapes
        pytest.fail(f"{getattr(fn, '__qualname__', fn)}{args!r}{kwargs!r} raised {type(e).__name__}: {e}")


def _close(obj):
    if obj is not None and hasattr(obj, "close"):
        obj.close()


CONSTRUCTORS = {
    "ReplayBuffer": ReplayBuffer,
    "ObsBoard": ObsBoard,
    "ActionBoard": lambda *a, **k: ActionBoard(*a[1:], **k),  # its first argument is the name
    "ParamStore": ParamStore,
    "SharedArray": SharedArray,
    "StaggerSchedule": StaggerSchedule,
    "Turnstile": Turnstile,
    "Timer": rtcore.Timer,
    "n_star": rtcore.n_star,
}


@pytest.mark.parametrize("ctor", sorted(CONSTRUCTORS))
@FUZZ
@given(args=st.lists(WEIRD, max_size=5))
def test_constructors_refuse_bad_arguments_cleanly(ctor, args):
    _close(_call(CONSTRUCTORS[ctor], *args))


@FUZZ
@given(name=WEIRD)
def test_attach_refuses_bad_names_cleanly(name):
    for cls in (ReplayBuffer, ObsBoard, ActionBoard, ParamStore, SharedArray, StaggerSchedule, Turnstile):
        _close(_call(cls.attach, name))


# --- methods: one valid object per test, random arguments to each method ---------------------------


@pytest.fixture(scope="module")
def objects():
    objs = {
        "replay": ReplayBuffer(64, (2, 2), frame_stack=2, streams=2, n_step=2),
        "obs": ObsBoard((2, 2), frame_stack=2),
        "act": ActionBoard(max_workers=4),
        "params": ParamStore(4),
        "sched": StaggerSchedule(2, 0.05, heartbeat_timeout=5.0),
        "turn": Turnstile(2, heartbeat_timeout=5.0),
        "timer": rtcore.Timer(0.001),
    }
    buf = objs["replay"]
    for t in range(10):
        buf.add(t % 2, np.full((2, 2), t, np.uint8), t, 0.5, False, False)
    objs["obs"].publish(np.zeros((2, 2), np.uint8), 0)
    objs["params"].publish(np.ones(4, np.float32))
    yield objs
    for o in objs.values():
        _close(o)
    import gc

    gc.collect()


def _methods(objs):
    r, o, a, p, s, t, tm = (objs[k] for k in ("replay", "obs", "act", "params", "sched", "turn", "timer"))
    ok2 = np.zeros((2, 2), np.uint8)
    return {
        "replay.add": lambda x, y, z: r.add(x, y, z, 0.0, False, False),
        "replay.add2": lambda x, y, z: r.add(0, ok2, 1, x, y, z),
        "replay.add3": lambda x, y, z: r.add(1, ok2, 1, 0.0, False, False, next_obs=x, was_default=y, delay=z),
        "replay.add4": lambda x, y, z: r.add(0, ok2, 1, 0.0, x, False, next_obs=ok2, episode_start=y),
        "replay.add_batch": lambda x, y, z: r.add_batch(x, y, z, [False, False], [False, False]),
        "replay.add_batch2": lambda x, y, z: r.add_batch(np.zeros((2, 2, 2), np.uint8), [1, 1], [0.0, 0.0], x, y,
                                                         next_obs=z),
        "replay.sample": lambda x, y, z: r.sample(x, out=y),
        "replay.misc": lambda x, y, z: (r.head(x), r.seed(y), r.empty_batch(z)),
        "obs.publish": lambda x, y, z: o.publish(x, y, z),
        "obs.read": lambda x, y, z: o.read(x),
        "obs.wait_step": lambda x, y, z: o.wait_step(x, timeout=0.0, spin=0.0),
        "obs.wait_step2": lambda x, y, z: o.wait_step(10**6, timeout=y, spin=0.0),
        "act.post": lambda x, y, z: a.post(x, y, z),
        "act.take": lambda x, y, z: a.take(),
        "params.publish": lambda x, y, z: p.publish(x, timeout=0.0),
        "params.publish2": lambda x, y, z: p.publish(np.ones(4, np.float32), timeout=y),
        "params.pin": lambda x, y, z: (p.pin(timeout=x if _short_timeout(x) else 0.0), p.unpin()),
        "params.views": lambda x, y, z: (p.buffer_view(x), p.buffer_address(y)),
        "sched.join": lambda x, y, z: s.leave(s.join(x)),
        "sched.calls": lambda x, y, z: (s.heartbeat(x), s.pending_delay(x), s.last_inference(x)),
        "sched.report": lambda x, y, z: s.report(x, y),
        "sched.waits": lambda x, y, z: (s.wait_turn(x, timeout=y), s.wait_publish(x, timeout=y)),
        "turn.join": lambda x, y, z: t.leave(t.join(x)),
        "turn.calls": lambda x, y, z: (t.heartbeat(x), t.try_turn(x), t.pass_turn(x)),
        "turn.wait": lambda x, y, z: t.wait_turn(x, timeout=y),
        "timer.wait": lambda x, y, z: tm.wait(timeout=y),
        "timer.deadline": lambda x, y, z: tm.deadline(x),
        "sleep_until": lambda x, y, z: rtcore.shared.timer.sleep_until(rtcore.shared.timer.monotonic() if x is None else -1.0, spin=y),
    }


METHOD_NAMES = sorted(_methods({k: None for k in ("replay", "obs", "act", "params", "sched", "turn", "timer")}))


@pytest.mark.parametrize("method", METHOD_NAMES)
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(x=WEIRD, y=st.one_of(WEIRD, TIMEOUTS), z=WEIRD)
def test_methods_refuse_bad_arguments_cleanly(objects, method, x, y, z):
    fn = _methods(objects)[method]
    if method in ("sched.waits", "turn.wait", "timer.wait", "params.publish2", "obs.wait_step2") and not _short_timeout(y):
        y = 0.0  # the timeout itself is fuzzed below; here the other arguments
    _call(fn, x, y, z)


def _short_timeout(y) -> bool:
    """True for what cannot block for long: refused values (NaN, inf, wrong types) and waits <= 10 ms."""
    if isinstance(y, float) and not math.isfinite(y):
        return True
    return y is not None and not (isinstance(y, (int, float)) and not isinstance(y, bool) and y > 0.01)


@pytest.mark.parametrize("method", ["sched.waits", "turn.wait", "timer.wait", "params.publish2", "params.pin"])
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(y=TIMEOUTS)
def test_timeouts_refuse_nan_inf_and_negative(objects, method, y):
    fn = _methods(objects)[method]
    x = 0 if method != "params.pin" else y
    bad = isinstance(y, float) and (math.isnan(y) or math.isinf(y) or y < 0)
    try:
        fn(x, y, None)
    except ALLOWED as e:
        assert PYBIND_DUMP not in str(e)
        return
    assert not bad, f"{method} accepted timeout={y!r}"
