"""Action history (``--action-history K``): the replay buffer's gather against a pure-Python reference,
the boards' act-time read, and the act-time features equal to the sampled ones end to end."""

from __future__ import annotations

import numpy as np
import pytest

from rtcore import ReplayBuffer
from rtcore.shared.replay import NO_ACTION

from test_replay import Model, check_batch, random_run


class HistoryModel(Model):
    """The reference model with the documented history: walks slots, no position arithmetic."""

    def __init__(self, capacity, streams, frame_stack, n_step, gamma, history):
        super().__init__(capacity, streams, frame_stack, n_step, gamma)
        self.H = history

    def sampleable(self):
        out = []
        back = max(self.K - 1, self.H)  # stack frames and history actions still in the ring
        for s, slots in enumerate(self.slots):
            lo = max(0, len(slots) - (self.S - back))
            out += [(s, j) for j in range(lo, len(slots)) if not slots[j].terminal_obs and self._chain(s, j)]
        return out

    def history(self, s, u, v):
        """Actions that led to frames u-H+1..u (oldest first; none before the episode start), then the
        pending slot: the posted action applied at u when u is before the own step v."""
        slots = self.slots[s]
        start = u - self._ep_off(s, u)
        h = [slots[q].action if q >= start else NO_ACTION for q in range(u - self.H, u)]
        h.append(slots[u].action if u < v and not slots[u].was_default else NO_ACTION)
        return h

    def expected_history(self, s, j, acted):
        k = self._chain(s, j)
        shift = min(self.slots[s][j].delay, self._ep_off(s, j)) if acted else 0
        return self.history(s, j - shift, j), self.history(s, j + k - shift, j + k)


def check_history(model: HistoryModel, buf: ReplayBuffer, batch, acted: bool) -> int:
    """Checks every row against the reference; returns how many rows had a pending action."""
    check_batch(model, buf, batch, acted)
    pending = 0
    for i in range(batch.batch_size):
        s, j = int(batch.index[i]) % buf.streams, int(batch.index[i]) // buf.streams
        h, nh = model.expected_history(s, j, acted)
        assert batch.action_history[i].tolist() == h, f"row {i} history of {(s, j)}, acted={acted}"
        assert batch.next_action_history[i].tolist() == nh, f"row {i} next history of {(s, j)}, acted={acted}"
        pending += h[-1] != NO_ACTION
    return pending


@pytest.mark.parametrize(
    "shape,frame_stack,H,n,streams,capacity,prioritized",
    [
        ((3,), 1, 2, 1, 1, 500, False),  # no wrap
        ((6, 5), 4, 3, 3, 3, 3 * 40, False),  # wraps many times; frames reach further than the history
        ((2,), 1, 6, 3, 2, 2 * 25, False),  # history reaches further than the frames, wraps
        ((2,), 2, 5, 2, 2, 2 * 30, True),  # prioritized draws, same gather
    ],
)
def test_history_matches_reference_for_both_conventions(rng, shape, frame_stack, H, n, streams, capacity,
                                                        prioritized):
    gamma = 0.9
    with ReplayBuffer(capacity, shape, "float32", frame_stack=frame_stack, streams=streams, n_step=n, gamma=gamma,
                      action_history=H, prioritized=prioritized) as buf:
        model = HistoryModel(capacity, streams, frame_stack, n, gamma, H)
        buf.seed(3)
        pending = 0
        for _ in range(6):
            random_run(rng, buf, model, steps=37)
            assert len(buf) == len(model.sampleable())
            b = min(len(buf), 64)
            pending += check_history(model, buf, buf.sample(b, learn_on="acted"), acted=True)
            batch = buf.sample(b, learn_on="applied")
            check_history(model, buf, batch, acted=False)
            assert (batch.action_history[:, -1] == NO_ACTION).all()  # applied: nothing is on its way
        assert pending > 0  # the test saw pending actions


def test_history_into_out_and_pooled_batches(rng):
    with ReplayBuffer(200, (2,), "float32", frame_stack=1, n_step=2, action_history=3) as buf:
        model = HistoryModel(200, 1, 1, 2, 0.99, 3)
        random_run(rng, buf, model, steps=80)
        out = buf.empty_batch(16)
        assert out.action_history.shape == (16, 4) and out.action_history.dtype == np.int64
        buf.seed(5)
        got = buf.sample(16, out=out, learn_on="acted")
        assert got is out
        check_history(model, buf, out, acted=True)
        pooled = buf.sample(16, learn_on="acted")
        assert pooled.action_history.shape == (16, 4) and pooled.next_action_history.shape == (16, 4)
        check_history(model, buf, pooled, acted=True)
        bad = buf.empty_batch(16)
        bad.action_history = np.zeros((16, 3), np.int64)
        with pytest.raises(ValueError, match="action_history"):
            buf.sample(16, out=bad)
        assert "action_history=3" in repr(buf)
        assert ReplayBuffer.attach(buf.name).action_history == 3


def test_buffers_without_history_are_unchanged(rng):
    with ReplayBuffer(100, (2,), "float32") as buf:
        assert buf.action_history == 0
        random_run(rng, buf, Model(100, 1, 1, 1, 0.99), steps=30)
        batch = buf.sample(8)
        assert batch.action_history.shape == (8, 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(action_history=-1), "action_history"),
    (dict(action_history=1025), "action_history"),
    (dict(action_history=10, capacity=12), "action_history"),  # too small for the history it reaches back
])
def test_bad_action_history(kwargs, match):
    kw = dict(capacity=100, obs_shape=(2,), obs_dtype="float32")
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(**kw)
