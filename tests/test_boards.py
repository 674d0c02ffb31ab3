"""ObsBoard, ActionBoard and SharedArray: API, bad inputs, and the hand-off across spawned processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time

import numpy as np
import pytest

import rtcore
from rtcore.shared.shared_array import SharedArray

# ---- ObsBoard ------------------------------------------------------------------------------------


def test_obs_board_stacks_pads_and_reports_steps() -> None:
    with rtcore.ObsBoard((2, 3), dtype="uint8", frame_stack=3) as b:
        assert b.obs_shape == (2, 3) and b.dtype == np.uint8 and b.frame_stack == 3
        assert b.stack_shape == (3, 2, 3)
        stack, step = b.read()
        assert step == -1 and b.step == -1 and b.published == 0
        assert stack.shape == (3, 2, 3) and not stack.any()

        def frame(v: int) -> np.ndarray:
            return np.full((2, 3), v, np.uint8)

        b.publish(frame(1), 0)  # the first publish starts an episode
        stack, step = b.read()
        assert step == 0 and [int(f[0, 0]) for f in stack] == [1, 1, 1]
        for v, s in [(2, 1), (3, 2), (4, 3)]:
            b.publish(frame(v), s)
        stack, step = b.read()
        assert step == 3 and [int(f[0, 0]) for f in stack] == [2, 3, 4]
        b.publish(frame(9), 10, episode_start=True)
        stack, step = b.read()
        assert step == 10 and [int(f[0, 0]) for f in stack] == [9, 9, 9]
        b.publish(frame(10), 11)
        out = np.empty((3, 2, 3), np.uint8)
        got, step = b.read(out=out)
        assert got is out and step == 11 and [int(f[0, 0]) for f in out] == [9, 9, 10]
        assert b.step == 11 and b.published == 6


def test_obs_board_float_frames_roundtrip(rng: np.random.Generator) -> None:
    with rtcore.ObsBoard(7, dtype=np.float32, frame_stack=2) as b:
        frames = rng.standard_normal((5, 7)).astype(np.float32)
        for i, f in enumerate(frames):
            b.publish(f, i)
        stack, step = b.read()
        assert step == 4
        np.testing.assert_array_equal(stack, frames[3:5])


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (((84, 84),), {"frame_stack": 0}, ValueError, "frame_stack must be >= 1"),
        (((84, 84),), {"frame_stack": 2.5}, TypeError, "frame_stack must be an int"),
        (((84, -1),), {}, ValueError, "positive"),
        (((),), {}, ValueError, "non-empty"),
        (("big",), {}, TypeError, "obs_shape must be a tuple"),
        (((84, 84),), {"dtype": "object"}, ValueError, "not supported"),
        (((84, 84),), {"dtype": "notadtype"}, TypeError, "not a numpy dtype"),
        (((84, 84),), {"name": "a/b"}, ValueError, "segment name"),
    ],
)
def test_obs_board_bad_construction(args: tuple, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        rtcore.ObsBoard(*args, **kwargs)


def test_obs_board_bad_frames_and_outs() -> None:
    with rtcore.ObsBoard((4, 4), frame_stack=2) as b:
        with pytest.raises(ValueError, match=r"frame has shape \(4, 5\), expected \(4, 4\)"):
            b.publish(np.zeros((4, 5), np.uint8), 0)
        with pytest.raises(ValueError, match="frame has dtype float32, expected uint8"):
            b.publish(np.zeros((4, 4), np.float32), 0)
        with pytest.raises(ValueError, match="C-contiguous"):
            b.publish(np.zeros((4, 8), np.uint8)[:, ::2], 0)
        with pytest.raises(ValueError, match="step must be >= 0"):
            b.publish(np.zeros((4, 4), np.uint8), -1)
        with pytest.raises(TypeError, match="step must be an int"):
            b.publish(np.zeros((4, 4), np.uint8), 1.0)
        b.publish(np.zeros((4, 4), np.uint8), 5)
        with pytest.raises(ValueError, match="not after the last published step 5"):
            b.publish(np.zeros((4, 4), np.uint8), 5)
        with pytest.raises(ValueError, match=r"out has shape \(4, 4\), expected \(2, 4, 4\)"):
            b.read(out=np.zeros((4, 4), np.uint8))
        with pytest.raises(ValueError, match="out has dtype"):
            b.read(out=np.zeros((2, 4, 4), np.int16))
        ro = np.zeros((2, 4, 4), np.uint8)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            b.read(out=ro)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            b.wait_step(0, timeout=-1)
        assert b.step == 5


def test_obs_board_attach_pickle_and_errors() -> None:
    b = rtcore.ObsBoard((3,), dtype="int16", frame_stack=2)
    try:
        b.publish(np.array([1, 2, 3], np.int16), 7)
        a = rtcore.ObsBoard.attach(b.name)
        assert a.obs_shape == (3,) and a.dtype == np.int16 and a.frame_stack == 2 and not a.owner
        assert a.read()[1] == 7
        c = pickle.loads(pickle.dumps(b))
        assert c.name == b.name and c.step == 7
        a.close()
        c.close()
        with pytest.raises(rtcore.ClosedError, match="is closed"):
            a.read()
        with pytest.raises(rtcore.LayoutError):
            rtcore.ActionBoard.attach(b.name)
        with pytest.raises(rtcore.LayoutError):
            SharedArray.attach(b.name)
    finally:
        b.close()
    with pytest.raises(FileNotFoundError):
        rtcore.ObsBoard.attach(b.name)
    with pytest.raises(rtcore.ClosedError, match="is closed"):
        b.publish(np.zeros(3, np.int16), 8)


def test_obs_board_read_array_outlives_close() -> None:
    b = rtcore.ObsBoard((2,), frame_stack=1)
    b.publish(np.array([5, 6], np.uint8), 0)
    stack, _ = b.read()
    b.close()
    assert stack.tolist() == [[5, 6]]  # a copy: owns its memory


def test_obs_board_wait_step_wakes_and_times_out() -> None:
    with rtcore.ObsBoard((8,), frame_stack=1) as b:
        with pytest.raises(TimeoutError, match="step > -1"):
            b.wait_step(-1, timeout=0.01)

        def writer() -> None:
            for s in range(6):
                time.sleep(0.002)
                b.publish(np.full(8, s, np.uint8), s)

        th = threading.Thread(target=writer)
        th.start()
        try:
            assert b.wait_step(4, timeout=30.0) == 5
        finally:
            th.join(timeout=10)
        assert b.wait_step(3, timeout=0) == 5  # already newer: no wait
        assert b.wait_step(4, timeout=1.0, spin=1e-4) == 5
        with pytest.raises(TimeoutError):
            b.wait_step(5, timeout=0.005, spin=1e-4)


def _frame_for(step: int) -> np.ndarray:
    """An 84x84 frame whose every byte depends on `step` (first 8 bytes: the step itself)."""
    f = np.full((84, 84), (step * 7 + 3) % 251, np.uint8)
    f.reshape(-1)[:8] = np.frombuffer(np.int64(step).tobytes(), np.uint8)
    return f


def _check_stack(stack: np.ndarray, step: int, episode_len: int) -> bool:
    ep = step - step % episode_len
    for j in range(stack.shape[0]):
        want = max(step - (stack.shape[0] - 1 - j), ep)
        if not np.array_equal(stack[j], _frame_for(want)):
            return False
    return True


def _reader_child(board: rtcore.ObsBoard, actions: rtcore.ActionBoard, results: SharedArray, worker: int) -> None:
    """Reads stacks until step 'last' is seen, checks each one, posts action = 7 * step + worker."""
    res = results.array
    out = np.empty(board.stack_shape, board.dtype)
    last_step = int(res[0, 3])
    seen = -1
    reads = bad = 0
    while seen < last_step:
        step = board.wait_step(seen, timeout=60.0)
        _, step = board.read(out=out)
        reads += 1
        if step <= seen or not _check_stack(out, step, episode_len=int(res[0, 4])):
            bad += 1
        seen = step
        actions.post(7 * step + worker, step, worker)
    res[worker + 1, 0] = reads
    res[worker + 1, 1] = bad
    res[worker + 1, 2] = seen


@pytest.mark.timeout(120)
def test_obs_board_and_action_board_across_spawned_processes(kill_alive) -> None:
    n_workers, n_steps, episode_len = 3, 1500, 23
    ctx = mp.get_context("spawn")
    board = rtcore.ObsBoard((84, 84), dtype="uint8", frame_stack=4)
    actions = rtcore.ActionBoard(max_workers=n_workers)
    results = SharedArray((n_workers + 1, 5), "int64")
    res = results.array
    res[0, 3] = n_steps - 1
    res[0, 4] = episode_len
    procs = [ctx.Process(target=_reader_child, args=(board, actions, results, w)) for w in range(n_workers)]
    taken: list[tuple[int, int, int]] = []
    try:
        for p in procs:
            p.start()
        for s in range(n_steps):
            board.publish(_frame_for(s), s, episode_start=(s % episode_len == 0))
            got = actions.take()
            if got is not None:
                taken.append(got)
            if s % 10 == 0:
                time.sleep(0.0005)  # let the readers keep up now and then, so both sides interleave
        for p in procs:
            p.join(timeout=90)
            assert p.exitcode == 0
        while (got := actions.take()) is not None:
            taken.append(got)
        posted, n_taken, superseded = actions.posted, actions.taken, actions.superseded
    finally:
        kill_alive(procs)
        board.close()
        actions.close()
    rows = res[1:].copy()
    results.close()
    assert (rows[:, 1] == 0).all(), f"torn or out-of-order stacks seen: {rows[:, 1]}"
    assert (rows[:, 0] >= 1).all() and (rows[:, 2] == n_steps - 1).all()
    # Every taken action is whole, at most once, and the posts of one worker come out in order.
    assert all(a == 7 * s + w for a, s, w in taken)
    assert len(set((s, w) for _, s, w in taken)) == len(taken)
    for w in range(n_workers):
        steps = [s for _, s, ww in taken if ww == w]
        assert steps == sorted(steps)
    assert posted == int(rows[:, 0].sum())
    assert n_taken == len(taken)
    assert n_taken + superseded == posted


# ---- ActionBoard ---------------------------------------------------------------------------------


def test_action_board_newest_once_and_counters() -> None:
    with rtcore.ActionBoard(max_workers=4) as b:
        assert b.max_workers == 4
        assert b.take() is None and not b.pending
        b.post(5, 10, 0)
        assert b.pending
        assert b.take() == (5, 10, 0)
        assert b.take() is None
        b.post(1, 11, 1)
        b.post(2, 12, 2)
        b.post(3, 9, 3)  # newest by post order, although computed from an older observation
        assert b.take() == (3, 9, 3)
        assert b.take() is None
        assert (b.posted, b.taken, b.superseded) == (4, 2, 2)
        b.post(-1, 13, 0)
        assert b.posted == b.taken + b.superseded + 1 and b.pending
        assert b.take() == (-1, 13, 0)
        assert (b.posted, b.taken, b.superseded) == (5, 3, 2)


def test_action_board_bad_inputs_and_attach() -> None:
    with pytest.raises(ValueError, match="max_workers must be in"):
        rtcore.ActionBoard(max_workers=0)
    with pytest.raises(ValueError, match="max_workers must be in"):
        rtcore.ActionBoard(max_workers=40000)
    b = rtcore.ActionBoard(max_workers=2)
    try:
        with pytest.raises(ValueError, match=r"worker must be in \[0, 2\), got 2"):
            b.post(0, 0, 2)
        with pytest.raises(ValueError, match="worker must be in"):
            b.post(0, 0, -1)
        with pytest.raises(TypeError, match="action must be an int"):
            b.post(1.5, 0, 0)
        with pytest.raises(TypeError, match="action must be an int"):
            b.post(True, 0, 0)
        b.post(np.int64(3), np.int32(4), 1)  # numpy integers are ints
        a = pickle.loads(pickle.dumps(b))
        assert a.take() == (3, 4, 1) and b.take() is None  # one board, taken once
        a.close()
        with pytest.raises(rtcore.LayoutError):
            rtcore.ObsBoard.attach(b.name)
    finally:
        b.close()
    with pytest.raises(FileNotFoundError):
        rtcore.ActionBoard.attach(b.name)


def _poster_child(actions: rtcore.ActionBoard, worker: int, n: int) -> None:
    for i in range(n):
        actions.post(1000 * i + worker, i, worker)


@pytest.mark.timeout(120)
def test_action_board_many_spawned_posters_exact_counts(kill_alive) -> None:
    n_workers, n_posts = 3, 3000
    ctx = mp.get_context("spawn")
    b = rtcore.ActionBoard(max_workers=n_workers)
    procs = [ctx.Process(target=_poster_child, args=(b, w, n_posts)) for w in range(n_workers)]
    taken: list[tuple[int, int, int]] = []
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            got = b.take()
            if got is not None:
                taken.append(got)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        while (got := b.take()) is not None:
            taken.append(got)
        assert b.posted == n_workers * n_posts
        assert b.taken == len(taken) >= 1
        assert b.taken + b.superseded == b.posted
        assert all(a == 1000 * s + w for a, s, w in taken)
        assert len(set((s, w) for _, s, w in taken)) == len(taken)
        assert any(s == n_posts - 1 for _, s, _ in taken)  # the very last post of some worker was taken
    finally:
        kill_alive(procs)
        b.close()


# ---- SharedArray ---------------------------------------------------------------------------------


def test_shared_array_shares_memory_and_keeps_views_alive() -> None:
    a = SharedArray((3, 4), "int64")
    assert a.shape == (3, 4) and a.dtype == np.int64 and not a.array.any()
    a.array[1, 2] = 42
    b = SharedArray.attach(a.name)
    assert b.array[1, 2] == 42 and not b.owner
    b.array[0, 0] = -1
    assert a.array[0, 0] == -1
    c = pickle.loads(pickle.dumps(a))
    assert c.array.tolist() == a.array.tolist()
    view = c.array
    c.close()
    b.close()
    a.close()
    assert view[1, 2] == 42  # the view holds the mapping
    with pytest.raises(rtcore.ClosedError, match="is closed"):
        a.array  # noqa: B018


def test_shared_array_scalar_empty_and_bad_inputs() -> None:
    with SharedArray((), "float32") as s:
        s.array[()] = 1.5
        assert s.array.shape == () and float(s.array) == 1.5
    with SharedArray(0, "uint8") as e:
        assert e.array.shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        SharedArray((2, -1), "int64")
    with pytest.raises(TypeError, match="shape must be"):
        SharedArray("x", "int64")
    with pytest.raises(ValueError, match="not supported"):
        SharedArray(3, "object")
    with pytest.raises(ValueError, match="at most 8"):
        SharedArray((1,) * 9, "int8")
    with pytest.raises(FileNotFoundError):
        SharedArray.attach("rtcore-no-such-array")
