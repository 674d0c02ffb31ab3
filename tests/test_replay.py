"""rtcore.ReplayBuffer: API, bad inputs, and semantics against a pure-Python reference model."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

import rtcore
from rtcore import ReplayBatch, ReplayBuffer


# --- a pure-Python reference model ----------------------------------------------------------------
# Written from the documented semantics, by walking slots rather than with the C++ position arithmetic.


@dataclass
class _Slot:
    frame: np.ndarray
    action: int = 0
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    was_default: bool = False
    delay: int = 0
    terminal_obs: bool = False  # holds an episode's final next_obs
    episode_start: bool = False


class Model:
    def __init__(self, capacity: int, streams: int, frame_stack: int, n_step: int, gamma: float) -> None:
        self.S = capacity // streams
        self.K, self.n, self.gamma = frame_stack, n_step, gamma
        self.slots: list[list[_Slot]] = [[] for _ in range(streams)]

    def close(self, s):
        """A restart: the open episode ends truncated one step early, its last frame as the final obs."""
        slots = self.slots[s]
        if slots and not slots[-1].terminal_obs:
            if not slots[-1].episode_start:
                slots[-2].truncated = True
            slots[-1].terminal_obs = True

    def add(self, s, obs, action, reward, terminated, truncated, next_obs=None, was_default=False, delay=0,
            episode_start=False):
        slots = self.slots[s]
        if episode_start:
            self.close(s)
        start = not slots or slots[-1].terminal_obs
        slots.append(_Slot(obs.copy(), action, float(np.float32(reward)), terminated, truncated, was_default, delay,
                           episode_start=start))
        if terminated or truncated:
            slots.append(_Slot(next_obs.copy(), terminal_obs=True))

    def _chain(self, s: int, j: int) -> int | None:
        """Steps k summed for a transition at position j, or None if its chain is not written yet."""
        slots = self.slots[s]
        for t in range(self.n):
            if j + t >= len(slots):
                return None
            if slots[j + t].terminated or slots[j + t].truncated:
                return t + 1
        return self.n if j + self.n < len(slots) else None

    def sampleable(self) -> list[tuple[int, int]]:
        out = []
        for s, slots in enumerate(self.slots):
            lo = max(0, len(slots) - (self.S - (self.K - 1)))  # stack frames still in the ring
            out += [(s, j) for j in range(lo, len(slots)) if not slots[j].terminal_obs and self._chain(s, j)]
        return out

    def _stack(self, s: int, p: int) -> np.ndarray:
        """Frames p-K+1..p, repeating the episode's first frame instead of crossing its start."""
        slots = self.slots[s]
        frames, q = [slots[p].frame], p
        for _ in range(self.K - 1):
            if not slots[q].episode_start:
                q -= 1
            frames.append(slots[q].frame)
        return np.stack(frames[::-1])

    def _ep_off(self, s: int, p: int) -> int:
        slots, off = self.slots[s], 0
        while not slots[p - off].episode_start:
            off += 1
        return off

    def expected(self, s: int, j: int, acted: bool = False) -> dict:
        slots = self.slots[s]
        k = self._chain(s, j)
        # acted: both stacks end delay steps earlier, never before the episode's first frame
        shift = min(slots[j].delay, self._ep_off(s, j)) if acted else 0
        ret = sum(self.gamma**t * slots[j + t].reward for t in range(k))
        last = slots[j + k - 1]
        done = last.terminated
        return dict(
            obs=self._stack(s, j - shift),
            next_obs=self._stack(s, j + k - shift),
            action=slots[j].action,
            reward=ret,
            done=done,
            discount=0.0 if done else self.gamma**k,
            was_default=slots[j].was_default,
            delay=slots[j].delay,
        )


def check_batch(model: Model, buf: ReplayBuffer, batch: ReplayBatch, acted: bool = False) -> None:
    valid = set(model.sampleable())
    for i in range(batch.batch_size):
        s, j = int(batch.index[i]) % buf.streams, int(batch.index[i]) // buf.streams
        assert (s, j) in valid, f"row {i}: transition {(s, j)} is not sampleable"
        e = model.expected(s, j, acted)
        np.testing.assert_array_equal(batch.obs[i], e["obs"], err_msg=f"row {i} obs of {(s, j)}")
        np.testing.assert_array_equal(batch.next_obs[i], e["next_obs"], err_msg=f"row {i} next_obs of {(s, j)}")
        assert batch.action[i] == e["action"]
        assert batch.reward[i] == pytest.approx(e["reward"], rel=1e-5, abs=1e-6)
        assert bool(batch.done[i]) == e["done"]
        assert batch.discount[i] == pytest.approx(e["discount"], rel=1e-6)
        assert bool(batch.was_default[i]) == e["was_default"]
        assert batch.delay[i] == e["delay"]


def random_run(rng, buf: ReplayBuffer, model: Model, steps: int, p_end: float = 0.1, batched: bool = False):
    """Random episodes on every stream; returns nothing, fills buf and model identically."""
    shape, dt = buf.obs_shape, buf.obs_dtype
    for _ in range(steps):
        n = buf.streams
        obs = (rng.integers(0, 250, size=(n, *shape)) if dt.kind in "iu" else rng.normal(size=(n, *shape))).astype(dt)
        nxt = (rng.integers(0, 250, size=(n, *shape)) if dt.kind in "iu" else rng.normal(size=(n, *shape))).astype(dt)
        action = rng.integers(0, 18, size=n)
        reward = rng.normal(size=n).astype(np.float32)
        end = rng.random(n) < p_end
        terminated = end & (rng.random(n) < 0.5)
        truncated = end & ~terminated
        was_default = rng.random(n) < 0.3
        delay = rng.integers(0, 5, size=n).astype(np.int32)
        if batched:
            buf.add_batch(obs, action, reward, terminated, truncated, nxt, was_default, delay)
        for s in range(n):
            args = (s, obs[s], int(action[s]), float(reward[s]), bool(terminated[s]), bool(truncated[s]))
            kw = dict(next_obs=nxt[s] if end[s] else None, was_default=bool(was_default[s]), delay=int(delay[s]))
            if not batched:
                buf.add(*args, **kw)
            model.add(*args, **kw)


# --- semantics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,dtype,K,n,streams,capacity",
    [
        ((6, 5), "uint8", 4, 3, 3, 3 * 40),  # Atari-like, wraps around many times
        ((6, 5), "uint8", 4, 1, 1, 500),  # no wrap
        ((3,), "float32", 1, 1, 2, 2 * 30),  # vector obs, no stacking
        ((2, 2, 3), "int16", 2, 5, 2, 2 * 25),  # 3-d obs, long n-step
    ],
)
def test_samples_match_reference_model(rng, shape, dtype, K, n, streams, capacity):
    gamma = 0.9
    with ReplayBuffer(capacity, shape, dtype, frame_stack=K, streams=streams, n_step=n, gamma=gamma) as buf:
        model = Model(capacity, streams, K, n, gamma)
        buf.seed(1)
        for _ in range(6):
            random_run(rng, buf, model, steps=37)
            assert len(buf) == len(model.sampleable())
            b = min(len(buf), 64)
            check_batch(model, buf, buf.sample(b))


@pytest.mark.parametrize(
    "shape,dtype,K,n,streams,capacity",
    [
        ((6, 5), "uint8", 4, 3, 3, 3 * 40),  # wraps around: some acted stacks have left the ring
        ((2, 2, 3), "int16", 2, 5, 2, 2 * 25),
        ((3,), "float32", 1, 1, 1, 500),  # no wrap
    ],
)
def test_acted_samples_end_delay_steps_earlier(rng, shape, dtype, K, n, streams, capacity):
    gamma = 0.9
    with ReplayBuffer(capacity, shape, dtype, frame_stack=K, streams=streams, n_step=n, gamma=gamma) as buf:
        model = Model(capacity, streams, K, n, gamma)
        buf.seed(2)
        shifted = 0
        for _ in range(6):
            random_run(rng, buf, model, steps=37)
            b = min(len(buf), 64)
            batch = buf.sample(b, learn_on="acted")
            check_batch(model, buf, batch, acted=True)
            shifted += int((batch.delay > 0).sum())
            check_batch(model, buf, buf.sample(b, learn_on="applied"))
        assert shifted > 0  # the test saw delayed transitions


def test_acted_pairs_the_action_with_the_frame_it_was_computed_from():
    with ReplayBuffer(100, (1,), "int32", frame_stack=1, n_step=1) as buf:
        f = lambda v: np.array([v], np.int32)  # noqa: E731
        for t in range(6):  # frame t; the action applied at t was computed from frame t - 2 (t - t at the start)
            buf.add(0, f(t), 100 + t, 0.0, t == 5, False, next_obs=f(6) if t == 5 else None, delay=min(t, 2))
        seen = {}
        for _ in range(30):
            batch = buf.sample(6, learn_on="acted")
            for a, o, no in zip(batch.action, batch.obs, batch.next_obs):
                seen[int(a) - 100] = (int(o[0, 0]), int(no[0, 0]))
        assert seen == {0: (0, 1), 1: (0, 1), 2: (0, 1), 3: (1, 2), 4: (2, 3), 5: (3, 4)}
        with pytest.raises(ValueError, match="learn_on"):
            buf.sample(2, learn_on="seen")


def test_stack_is_padded_with_the_episode_first_frame():
    with ReplayBuffer(100, (1,), "int32", frame_stack=3, n_step=1) as buf:
        f = lambda v: np.array([v], np.int32)  # noqa: E731
        buf.add(0, f(10), 0, 0.0, False, False)
        buf.add(0, f(11), 1, 0.0, True, False, next_obs=f(12))
        buf.add(0, f(20), 2, 0.0, False, False)  # a new episode: never stacked with 10, 11, 12
        buf.add(0, f(21), 3, 0.0, False, False)
        assert len(buf) == 3
        batch = buf.sample(3)
        rows = {int(a): (b.ravel().tolist(), c.ravel().tolist()) for a, b, c in zip(batch.action, batch.obs, batch.next_obs)}
        seen = set()
        for _ in range(50):
            batch = buf.sample(3)
            for a, o, no in zip(batch.action, batch.obs, batch.next_obs):
                seen.add(int(a))
                assert (o.ravel().tolist(), no.ravel().tolist()) == {
                    0: ([10, 10, 10], [10, 10, 11]),
                    1: ([10, 10, 11], [10, 11, 12]),
                    2: ([20, 20, 20], [20, 20, 21]),
                }[int(a)]
        assert seen == {0, 1, 2} and rows


def test_n_step_return_discount_and_done():
    g = 0.5
    with ReplayBuffer(100, (1,), "float32", n_step=3, gamma=g) as buf:
        f = lambda v: np.array([v], np.float32)  # noqa: E731
        for t in range(4):  # rewards 1, 2, 3, 4; step 3 terminates
            buf.add(0, f(t), t, float(t + 1), t == 3, False, next_obs=f(99))
        for t in range(4, 6):  # a truncated episode of two steps
            buf.add(0, f(t), t, 1.0, False, t == 5, next_obs=f(98))
        want = {
            0: (1 + g * 2 + g * g * 3, False, g**3, 3.0),
            1: (2 + g * 3 + g * g * 4, True, 0.0, 99.0),
            2: (3 + g * 4, True, 0.0, 99.0),
            3: (4, True, 0.0, 99.0),
            4: (1 + g * 1, False, g**2, 98.0),  # truncation bootstraps from the final obs
            5: (1, False, g, 98.0),
        }
        assert len(buf) == 6
        buf.seed(0)
        seen = set()
        for _ in range(40):
            b = buf.sample(6)
            for i in range(6):
                r, d, disc, nxt = want[int(b.action[i])]
                seen.add(int(b.action[i]))
                assert b.reward[i] == pytest.approx(r) and bool(b.done[i]) == d
                assert b.discount[i] == pytest.approx(disc) and b.next_obs[i, 0, 0] == nxt
        assert seen == set(want)


@pytest.mark.parametrize("K,n", [(4, 3), (1, 1), (3, 5)])
def test_episode_start_begins_a_new_chain_and_closes_the_open_episode_as_truncated(rng, K, n):
    cap, streams = 3 * 40, 3
    with ReplayBuffer(cap, (3, 2), "uint8", frame_stack=K, streams=streams, n_step=n, gamma=0.8) as buf:
        model = Model(cap, streams, K, n, 0.8)
        buf.seed(2)
        for _ in range(4):
            random_run(rng, buf, model, steps=23, p_end=0.05)
            for s in range(streams):  # restart some streams mid-episode (and one right after another)
                for _ in range(1 + s % 2):
                    obs = rng.integers(0, 250, size=(3, 2)).astype(np.uint8)
                    buf.add(s, obs, 5, 1.0, False, False, episode_start=True)
                    model.add(s, obs, 5, 1.0, False, False, episode_start=True)
            assert len(buf) == len(model.sampleable())
            check_batch(model, buf, buf.sample(min(len(buf), 64)))


def test_a_writer_in_another_process_never_continues_the_open_episode():
    f = lambda v: np.array([v], np.int32)  # noqa: E731
    with ReplayBuffer(64, (1,), "int32", frame_stack=3, n_step=2, gamma=0.5) as buf:
        pid = os.fork()
        if pid == 0:  # a writer that stops mid-episode (as one that is killed would)
            try:
                child = ReplayBuffer.attach(buf.name)
                for t in range(5):
                    child.add(0, f(t), t, 1.0, False, False)
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        for t in (10, 11, 12):  # this process restarted the env: a new episode, not steps 5, 6, 7
            buf.add(0, f(t), t, 1.0, False, False)
        model = Model(64, 1, 3, 2, 0.5)
        for t in range(5):
            model.add(0, f(t), t, 1.0, False, False)
        for t in (10, 11, 12):
            model.add(0, f(t), t, 1.0, False, False, episode_start=t == 10)
        assert len(buf) == len(model.sampleable()) == 5  # steps 0..3 and 10; step 4 had no next obs
        buf.seed(0)
        seen = set()
        for _ in range(30):
            b = buf.sample(5)
            check_batch(model, buf, b)
            seen |= {int(a) for a in b.action}
            for a, o, no in zip(b.action, b.obs, b.next_obs):
                if a == 3:  # truncated: bootstraps from frame 4, never from the new episode
                    assert o.ravel().tolist() == [1, 2, 3] and no.ravel().tolist() == [2, 3, 4]
                if a == 10:  # stacks never cross the boundary
                    assert o.ravel().tolist() == [10, 10, 10] and no.ravel().tolist() == [10, 11, 12]
        assert seen == {0, 1, 2, 3, 10}


def test_add_batch_equals_add_per_stream(rng):
    kw = dict(capacity=4 * 30, obs_shape=(4, 3), frame_stack=2, streams=4, n_step=2)
    with ReplayBuffer(**kw) as a, ReplayBuffer(**kw) as b:
        model = Model(4 * 30, 4, 2, 2, 0.99)
        random_run(np.random.default_rng(5), a, model, steps=80, batched=True)
        random_run(np.random.default_rng(5), b, Model(4 * 30, 4, 2, 2, 0.99), steps=80, batched=False)
        assert len(a) == len(b) == len(model.sampleable())
        a.seed(3)
        b.seed(3)
        ba, bb = a.sample(32), b.sample(32)
        for field in ("obs", "next_obs", "action", "reward", "done", "discount", "was_default", "delay", "index"):
            np.testing.assert_array_equal(getattr(ba, field), getattr(bb, field))
        check_batch(model, a, ba)


def test_seeded_sampling_is_reproducible_and_out_is_filled_in_place(rng):
    with ReplayBuffer(200, (5,), "uint8", frame_stack=2) as buf:
        random_run(rng, buf, Model(200, 1, 2, 1, 0.99), steps=150)
        out = buf.empty_batch(16)
        arrays = [out.obs, out.next_obs, out.action, out.index]
        buf.seed(42)
        first = buf.sample(16, out=out).index.copy()
        buf.seed(42)
        again = buf.sample(16, out=out)
        assert again is out and [out.obs, out.next_obs, out.action, out.index] == arrays
        np.testing.assert_array_equal(first, out.index)


def test_empty_batch_shapes_and_dtypes():
    with ReplayBuffer(64, (84, 84), frame_stack=4) as buf:
        b = buf.empty_batch(32)
        assert b.obs.shape == b.next_obs.shape == (32, 4, 84, 84) and b.obs.dtype == np.uint8
        assert (b.action.dtype, b.reward.dtype, b.done.dtype, b.discount.dtype) == (np.int64, np.float32, np.bool_, np.float32)
        assert (b.was_default.dtype, b.delay.dtype, b.index.dtype) == (np.bool_, np.int32, np.int64)
        assert len(b) == 32 and all(a.flags.c_contiguous for a in (b.obs, b.next_obs))


def test_properties_repr_and_layout_limits():
    with ReplayBuffer(1000, 4, "float64", frame_stack=1, streams=3, n_step=2, gamma=0.5) as buf:
        assert (buf.capacity, buf.obs_shape, buf.obs_dtype, buf.frame_stack, buf.streams, buf.n_step, buf.gamma) == (
            1000, (4,), np.dtype("float64"), 1, 3, 2, 0.5)
        assert len(buf) == 0 and "capacity=1000" in repr(buf)
        assert buf.nbytes >= 1000 * 32
        with pytest.raises(AttributeError):
            buf.capacity = 5  # type: ignore[misc]


def test_memory_is_close_to_the_frames():
    cap, fb = 10_000, 84 * 84
    with ReplayBuffer(cap, (84, 84), frame_stack=4, streams=8) as buf:
        assert buf.nbytes <= 1.02 * cap * fb + (1 << 20)


# --- processes, pickling, lifetime -----------------------------------------------------------------


def test_attach_and_pickle_share_the_same_memory():
    with ReplayBuffer(100, (2,), "int64", n_step=1) as buf:
        other = pickle.loads(pickle.dumps(buf))
        assert isinstance(other, ReplayBuffer) and not other.owner and other.name == buf.name
        other.add(0, np.array([1, 2]), 7, 1.0, False, False)
        other.add(0, np.array([3, 4]), 8, 1.0, False, False)  # continues the stream
        assert len(buf) == 1 and buf.sample(1).action[0] == 7
        assert other.frame_stack == 1 and other.obs_dtype == np.int64
        other.close()
        assert rtcore._core.segment_exists(buf.name)  # an attached handle never unlinks
    assert not rtcore._core.segment_exists(buf.name)


def test_closed_buffer_raises_clearly():
    buf = ReplayBuffer(100, (2,))
    buf.close()
    buf.close()  # harmless
    with pytest.raises(rtcore.ClosedError, match="closed"):
        buf.add(0, np.zeros(2, np.uint8), 0, 0.0, False, False)
    with pytest.raises(rtcore.ClosedError, match="closed"):
        len(buf)
    with pytest.raises(rtcore.ClosedError, match="closed"):
        buf.sample(1)


# --- bad inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(capacity=0), ValueError, "capacity must be >= 1"),
        (dict(capacity=-5), ValueError, "capacity"),
        (dict(capacity=1.5), TypeError, "capacity must be an int"),
        (dict(capacity=10, frame_stack=4, n_step=3, streams=2), ValueError, "capacity must be >= 16"),
        (dict(obs_shape=(84, 0)), ValueError, "obs_shape"),
        (dict(obs_shape="84"), TypeError, "obs_shape"),
        (dict(obs_dtype="U3"), ValueError, "obs_dtype"),
        (dict(obs_dtype=object), ValueError, "obs_dtype"),
        (dict(obs_dtype=">u2"), ValueError, "native byte order"),
        (dict(obs_dtype="nonsense"), TypeError, "obs_dtype"),
        (dict(frame_stack=0), ValueError, "frame_stack"),
        (dict(streams=0), ValueError, "streams"),
        (dict(n_step=0), ValueError, "n_step"),
        (dict(n_step=256), ValueError, "n_step must be in"),
        (dict(gamma=1.5), ValueError, "gamma"),
        (dict(gamma="0.9"), TypeError, "gamma"),
        (dict(name="a/b"), ValueError, "character '/'"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(capacity=100, obs_shape=(4,))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ReplayBuffer(**args)


def test_bad_adds_raise_and_leave_data_intact():
    with ReplayBuffer(100, (2, 3), "uint8", frame_stack=2, streams=2) as buf:
        ok = np.ones((2, 3), np.uint8)
        buf.add(0, ok, 1, 1.0, False, False)
        buf.add(0, ok * 2, 2, 1.0, False, False)
        before = (len(buf), buf.head(0), buf.head(1))
        with pytest.raises(ValueError, match=r"obs has shape \(3, 2\), expected \(2, 3\)"):
            buf.add(0, np.ones((3, 2), np.uint8), 0, 0.0, False, False)
        with pytest.raises(ValueError, match="obs has dtype float32, expected uint8"):
            buf.add(0, ok.astype(np.float32), 0, 0.0, False, False)
        with pytest.raises(ValueError, match="C-contiguous"):
            buf.add(0, np.ones((3, 2), np.uint8).T, 0, 0.0, False, False)
        with pytest.raises(IndexError, match="stream 2 is out of range"):
            buf.add(2, ok, 0, 0.0, False, False)
        with pytest.raises(IndexError, match="stream -1 is out of range"):
            buf.add(-1, ok, 0, 0.0, False, False)
        with pytest.raises(ValueError, match="next_obs is required"):
            buf.add(0, ok, 0, 0.0, True, False)
        with pytest.raises(ValueError, match="next_obs has shape"):
            buf.add(0, ok, 0, 0.0, False, True, next_obs=np.ones(6, np.uint8))
        with pytest.raises(TypeError):
            buf.add(0, ok, "left", 0.0, False, False)
        assert (len(buf), buf.head(0), buf.head(1)) == before
        b = buf.sample(1)
        assert b.action[0] == 1 and b.obs[0, 1, 0, 0] == 1 and b.next_obs[0, 1, 0, 0] == 2


def test_bad_add_batch_inputs():
    with ReplayBuffer(100, (2,), "uint8", streams=2) as buf:
        obs = np.zeros((2, 2), np.uint8)
        f = np.zeros(2, bool)
        with pytest.raises(ValueError, match=r"obs has shape \(3, 2\), expected \(2, 2\)"):
            buf.add_batch(np.zeros((3, 2), np.uint8), [0, 0], [0, 0], f, f)
        with pytest.raises(ValueError, match="action has shape"):
            buf.add_batch(obs, [0, 0, 0], [0, 0], f, f)
        with pytest.raises(ValueError, match="action has dtype float64"):
            buf.add_batch(obs, [0.5, 1.0], [0, 0], f, f)
        with pytest.raises(ValueError, match="terminated has dtype"):
            buf.add_batch(obs, [0, 0], [0, 0], [0, 1], f)
        with pytest.raises(ValueError, match="next_obs is required"):
            buf.add_batch(obs, [0, 0], [0, 0], np.array([False, True]), f)
        assert buf.head(0) == buf.head(1) == 0


def test_bad_samples():
    with ReplayBuffer(100, (2,), "uint8", frame_stack=2) as buf:
        with pytest.raises(ValueError, match="only 0 transition"):
            buf.sample(1)
        for t in range(5):
            buf.add(0, np.full(2, t, np.uint8), t, 0.0, False, False)
        assert len(buf) == 4
        with pytest.raises(ValueError, match="cannot sample a batch of 5: only 4"):
            buf.sample(5)
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            buf.sample(0)
        with pytest.raises(ValueError, match=r"out holds a batch of \(3,\)"):
            buf.sample(2, out=buf.empty_batch(3))
        with pytest.raises(TypeError, match="ReplayBatch"):
            buf.sample(2, out={})
        bad = buf.empty_batch(2)
        bad.obs = np.zeros((2, 3, 2), np.uint8)
        with pytest.raises(ValueError, match=r"out.obs has shape \(2, 3, 2\), expected \(2, 2, 2\)"):
            buf.sample(2, out=bad)
        bad = buf.empty_batch(2)
        bad.reward = np.zeros(2, np.float64)
        with pytest.raises(ValueError, match="out.reward has dtype float64, expected float32"):
            buf.sample(2, out=bad)
        bad = buf.empty_batch(2)
        bad.obs.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            buf.sample(2, out=bad)


def test_attach_errors():
    with pytest.raises(FileNotFoundError, match="no shared-memory segment"):
        ReplayBuffer.attach(f"{os.environ['RTCORE_SHM_PREFIX']}-missing")
    with pytest.raises(TypeError):
        ReplayBuffer.attach(3)  # type: ignore[arg-type]
    # A file that is not an rtcore segment, and a replay segment of another layout version.
    junk = f"{os.environ['RTCORE_SHM_PREFIX']}-junk"
    with open(f"/dev/shm/{junk}", "wb") as fh:
        fh.write(b"\0" * 8192)
    try:
        with pytest.raises(rtcore.LayoutError, match="not an rtcore segment"):
            ReplayBuffer.attach(junk)
        with ReplayBuffer(64, (2,)) as buf:
            with open(f"/dev/shm/{buf.name}", "rb") as fh:
                data = bytearray(fh.read())
            data[12:16] = (999).to_bytes(4, "little")  # Header.layout_version
            with open(f"/dev/shm/{junk}", "wb") as fh:
                fh.write(data)
            with pytest.raises(rtcore.LayoutError, match="layout version 999"):
                ReplayBuffer.attach(junk)
            with pytest.raises(FileExistsError):
                ReplayBuffer(64, (2,), name=buf.name)
    finally:
        os.unlink(f"/dev/shm/{junk}")


def test_sample_into_out_allocates_no_arrays(rng):
    import tracemalloc

    with ReplayBuffer(500, (84, 84), frame_stack=4) as buf:
        random_run(rng, buf, Model(500, 1, 4, 1, 0.99), steps=300)
        out = buf.empty_batch(32)
        buf.sample(32, out=out)
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            for _ in range(200):
                buf.sample(32, out=out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - base < 16 * 1024, f"sample(out=) allocated {peak - base} bytes at peak (one batch is 1.8 MB)"
