"""Prioritized rtcore.ReplayBuffer: frequencies against priorities (chi-squared), importance weights,
entry at the running maximum, bad inputs, and writers, samplers and priority updaters in separate
processes with a writer SIGKILLed mid-stream."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import time
from collections import Counter

import numpy as np
import pytest
from test_replay import Model, random_run
from test_replay_stress import GAMMA, K, N, SHAPE, L, kill_and_hand_over, next_step, verify, writer

import rtcore
from rtcore import ReplayBuffer


def chi2_critical(df: int, z: float = 3.0902) -> float:
    """Upper critical value of the chi-squared distribution (z = 3.0902: p = 0.001) by Wilson and
    Hilferty's cube-root normal approximation (relative error under 0.5% for df >= 30; e.g. df = 49:
    85.38 against the tabulated 85.35)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def test_chi2_critical_matches_tables():
    assert chi2_critical(49) == pytest.approx(85.351, rel=5e-3)
    assert chi2_critical(99) == pytest.approx(148.230, rel=5e-3)


def test_sampled_frequencies_match_priorities_over_all_streams(rng):
    alpha, beta = 0.7, 0.5
    with ReplayBuffer(3 * 40, (2,), "uint8", frame_stack=2, streams=3, n_step=2, gamma=0.9,
                      prioritized=True, alpha=alpha, beta=beta) as buf:
        model = Model(3 * 40, 3, 2, 2, 0.9)
        random_run(rng, buf, model, steps=60, p_end=0.08)
        sampleable = sorted(j * 3 + s for s, j in model.sampleable())
        assert len(buf) == len(sampleable) >= 60
        # A priority for every position still in the ring (zeros included); slots that are not
        # sampleable get one too and must still never be drawn.
        written = np.array([j * 3 + s for s in range(3) for j in range(max(0, buf.head(s) - 40), buf.head(s))], np.int64)
        pri = np.where(rng.random(written.size) < 0.15, 0.0, rng.uniform(0.05, 5.0, written.size))
        assert buf.update_priorities(written, pri) == written.size == 120
        assert buf.update_priorities([0], [1.0]) == 0  # position 0 was overwritten long ago: skipped
        p_of = dict(zip(written.tolist(), pri.tolist()))
        mass = {i: p_of[i] ** alpha for i in sampleable}
        total = sum(mass.values())
        buf.seed(11)
        out = buf.empty_batch(64)
        counts: Counter[int] = Counter()
        n = 0
        for _ in range(500):
            buf.sample(64, out=out)
            counts.update(out.index.tolist())
            n += 64
            # Importance weights: (N * P(i))**-beta, divided by the batch's largest.
            w = (len(sampleable) * np.array([mass[int(i)] / total for i in out.index])) ** -beta
            np.testing.assert_allclose(out.weight, w / w.max(), rtol=2e-5)
            assert out.weight.max() == 1.0
        assert set(counts) <= {i for i in sampleable if mass[i] > 0}, "drew a transition of priority 0 or not sampleable"
        cells = [i for i in sampleable if mass[i] > 0]
        chi2 = sum((counts[i] - n * mass[i] / total) ** 2 / (n * mass[i] / total) for i in cells)
        crit = chi2_critical(len(cells) - 1)
        assert chi2 < crit, f"chi2 {chi2:.1f} over {len(cells) - 1} df exceeds the p=0.001 critical value {crit:.1f}"
        # The same counts against uniform draws fail the test by far: it can tell the two apart.
        uni = sum((counts[i] - n / len(cells)) ** 2 / (n / len(cells)) for i in cells)
        assert uni > 5 * crit


def test_new_transitions_enter_at_the_largest_priority_so_far():
    with ReplayBuffer(100, (1,), "uint8", prioritized=True, alpha=0.5) as buf:
        for t in range(5):
            buf.add(0, np.array([t], np.uint8), t, 0.0, False, False)
        assert buf.max_priority == 1.0 and buf.priority(0) == pytest.approx(1.0)
        buf.update_priorities([0, 1, 2], [9.0, 0.25, 4.0])
        assert buf.max_priority == pytest.approx(9.0, rel=1e-6)
        buf.update_priorities([0], [0.5])  # lowering one priority does not lower the entry priority
        buf.add(0, np.array([9], np.uint8), 9, 0.0, False, False)
        assert buf.priority(5) == pytest.approx(9.0, rel=1e-6)
        assert buf.priority(0) == pytest.approx(0.5, rel=1e-5) and buf.priority(1) == pytest.approx(0.25, rel=1e-5)


def test_overwritten_transitions_ignore_late_updates_and_zero_priority_is_never_drawn():
    with ReplayBuffer(10, (1,), "uint8", prioritized=True, alpha=1.0) as buf:
        for t in range(25):  # laps the 10-slot ring twice
            buf.add(0, np.array([t], np.uint8), t, 0.0, False, False)
        assert buf.priority(3) is None  # position 3 was overwritten by 13 and 23
        assert buf.update_priorities([3, 20], [7.0, 2.0]) == 1
        assert buf.priority(23) == pytest.approx(1.0)  # the slot's occupant kept its own priority
        live = np.arange(15, 24)
        buf.update_priorities(live, np.where(live == 18, 3.0, 0.0))
        buf.seed(0)
        assert {i for _ in range(8) for i in buf.sample(8).index.tolist()} == {18}
        buf.update_priorities(live, np.zeros(live.size))
        with pytest.raises(ValueError, match="priority 0"):
            buf.sample(4)


def test_alpha_zero_is_uniform_and_attach_shares_priorities():
    with ReplayBuffer(50, (1,), "uint8", prioritized=True, alpha=0.0) as buf:
        for t in range(20):
            buf.add(0, np.array([t], np.uint8), t, 0.0, False, False)
        buf.update_priorities([1, 2], [100.0, 0.0])
        assert buf.priority(1) == 1.0 and buf.priority(2) == 1.0
        other = pickle.loads(pickle.dumps(buf))
        assert other.prioritized and other.alpha == 0.0 and other.beta == buf.beta
        other.beta = 1.0
        assert buf.beta == 0.4  # beta is per handle
        b = other.sample(8)
        np.testing.assert_array_equal(b.weight, np.ones(8, np.float32))
        other.close()


def test_uniform_buffer_batch_has_unit_weights_and_refuses_priorities():
    with ReplayBuffer(50, (1,), "uint8") as buf:
        for t in range(5):
            buf.add(0, np.array([t], np.uint8), t, 0.0, False, False)
        assert not buf.prioritized
        np.testing.assert_array_equal(buf.sample(3).weight, np.ones(3, np.float32))
        with pytest.raises(ValueError, match="prioritized=True"):
            buf.update_priorities([0], [1.0])
        with pytest.raises(ValueError, match="prioritized buffers only"):
            buf.sample(2, beta=0.5)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(alpha=1.5), ValueError, "alpha must be in"),
        (dict(alpha=-0.1), ValueError, "alpha must be in"),
        (dict(beta=2.0), ValueError, "beta must be in"),
        (dict(beta=float("nan")), ValueError, "beta must be in"),
        (dict(alpha="0.5"), TypeError, "alpha must be a float"),
        (dict(prioritized=1), TypeError, "prioritized must be a bool"),
        (dict(capacity=(1 << 24) + 8), ValueError, "at most 16777216 slots"),
    ],
)
def test_bad_prioritized_constructor_arguments(kwargs, exc, match):
    args = dict(capacity=100, obs_shape=(1,), prioritized=True)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ReplayBuffer(**args)


def test_bad_priority_updates_raise_and_change_nothing():
    with ReplayBuffer(100, (1,), "uint8", streams=2, prioritized=True, alpha=1.0) as buf:
        for t in range(6):
            buf.add(t % 2, np.array([t], np.uint8), t, 0.0, False, False)
        before = buf._h.total_priority_value()
        cases = [
            (([0, 1], [1.0, -2.0]), ValueError, r"priority\[1\] is -2: priorities must be finite and >= 0"),
            (([0], [float("nan")]), ValueError, "must be finite"),
            (([0], [float("inf")]), ValueError, "must be finite"),
            (([0, 6], [1.0, 1.0]), IndexError, "names position 3 of stream 0, which has not been written"),
            (([-1], [1.0]), IndexError, "indices are >= 0"),
            (([0, 1], [1.0]), ValueError, r"priority has shape \(1,\), expected \(2,\)"),
            (([[0]], [[1.0]]), ValueError, "one-dimensional"),
            (([0.5], [1.0]), ValueError, "index has dtype float64"),
            (([0], ["x"]), ValueError, "priority has dtype"),
        ]
        for args, exc, match in cases:
            with pytest.raises(exc, match=match):
                buf.update_priorities(*args)
        assert buf._h.total_priority_value() == before and buf.max_priority == 1.0
        with pytest.raises(ValueError, match="beta must be in"):
            buf.sample(2, beta=1.5)
        with pytest.raises(ValueError, match="beta must be in"):
            buf.beta = -1
        with pytest.raises(IndexError, match="not been written"):
            buf.priority(40)
        with pytest.raises(ValueError, match="out.weight has dtype float64"):
            out = buf.empty_batch(2)
            out.weight = np.ones(2)
            buf.sample(2, out=out)


def test_prioritized_segment_layout_is_checked_on_attach():
    with ReplayBuffer(64, (2,), prioritized=True) as buf:
        assert rtcore._core.Replay.layout_version == (3 << 16) | 1  # (ring layout << 16) | tree layout
        again = ReplayBuffer.attach(buf.name)
        assert again.prioritized and again.alpha == 0.6
        again.close()


# --- processes ------------------------------------------------------------------------------------


def sampler_updater(name: str, stop, results, scale: float, cut) -> None:
    buf = ReplayBuffer.attach(name)
    buf.seed(os.getpid())
    out = buf.empty_batch(32)
    rows = bad = applied = 0
    first = ""
    while not stop.is_set():
        if len(buf) < 32:
            continue
        buf.sample(32, out=out)
        c = cut.value  # read after the sample: a batch that holds the heir's steps was drawn after it was set
        for i in range(32):
            err = verify(out, i, c)
            if not err and not (0.0 < out.weight[i] <= 1.0):
                err = f"weight {out.weight[i]}"
            if err:
                bad += 1
                first = first or err
        rows += 32
        # Both updaters write different priorities for overlapping transitions at once.
        applied += buf.update_priorities(out.index, scale * (1.0 + (out.index % 13)))
    results.put((rows, bad, first, applied))
    buf.close()


@pytest.mark.timeout(120)
def test_prioritized_writers_samplers_and_updaters_in_processes_with_a_writer_killed(kill_alive):
    ctx = mp.get_context("spawn")
    buf = ReplayBuffer(3 * 60, SHAPE, "uint8", frame_stack=K, streams=3, n_step=N, gamma=GAMMA,
                       prioritized=True, alpha=0.6, beta=0.4)
    go, stop, results, cut = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Value("q", -1)
    procs = []
    try:
        victim = ctx.Process(target=writer, args=(buf.name, 0, -1, go))
        procs.append(victim)
        procs += [ctx.Process(target=writer, args=(buf.name, s, 4000, go)) for s in (1, 2)]
        updaters = [ctx.Process(target=sampler_updater, args=(buf.name, stop, results, sc, cut)) for sc in (1.0, 0.5)]
        procs += updaters
        for p in procs:
            p.start()
        go.set()
        deadline = time.monotonic() + 60
        while buf.head(0) < 2500 and time.monotonic() < deadline:
            time.sleep(0.005)
        # the heir starts the world's next episode; the dead writer's open episode ends, truncated
        killed_at, head_at_kill, heir = kill_and_hand_over(ctx, buf, victim, go, cut, 1500)
        procs.append(heir)
        for p in procs[1:3] + [heir]:
            p.join(90)
            assert p.exitcode == 0
        stop.set()
        got = [results.get(timeout=30) for _ in updaters]
        for p in updaters:
            p.join(10)
            assert p.exitcode == 0
        heads = [buf.head(0) - head_at_kill, next_step(buf, 1), next_step(buf, 2)]
        consistent = buf._h.priority_tree_consistent()
        buf.seed(5)
        after = buf.sample(64)
        c = cut.value
    finally:
        kill_alive(procs)
        results.close()
        buf.close()
    rows = sum(g[0] for g in got)
    bad = sum(g[1] for g in got)
    first = next((g[2] for g in got if g[2]), "")
    print(f"prioritized stress: {rows} rows checked, {sum(g[3] for g in got)} priority updates applied, "
          f"writer killed at step {killed_at}")
    assert bad == 0, f"{bad} of {rows} sampled transitions were wrong, first: {first}"
    assert all(g[0] >= 32 * 5 and g[3] > 0 for g in got)
    # The killed add left no trace and closing the open episode took no slot: the heir's 1500 steps from
    # an episode start took 1500 + 1500 // L(0) slots.
    assert heads == [1500 + 1500 // L(0), 4000, 4000]
    # Every tree node equals the sum of its children once the updaters and writers are done, even
    # with a writer killed mid-add and two processes updating the same transitions at once.
    assert consistent
    assert all(verify(after, i, c) == "" for i in range(64))


def test_add_many_sets_the_same_priorities_as_single_adds():
    """add_many on a prioritized buffer enters every new transition at the running maximum, and its
    episode ends' terminal-obs slots at 0, exactly as the same steps added one at a time (before: its
    slots kept priority 0, so a buffer filled by add_many could not be sampled)."""
    rng = np.random.default_rng(3)
    k = 40
    obs = rng.integers(0, 256, (k, 2), dtype=np.uint8)
    action = rng.integers(0, 4, k)
    reward = rng.normal(size=k).astype(np.float32)
    term = np.zeros(k, bool)
    term[[9, 25]] = True
    trunc = np.zeros(k, bool)
    trunc[33] = True
    nxt = rng.integers(0, 256, (k, 2), dtype=np.uint8)
    with ReplayBuffer(64, (2,), "uint8", frame_stack=2, n_step=2, prioritized=True, alpha=0.5) as one, \
            ReplayBuffer(64, (2,), "uint8", frame_stack=2, n_step=2, prioritized=True, alpha=0.5) as many:
        for buf in (one, many):  # a raised running maximum first: the entry priority is not the default 1
            buf.add(0, obs[0], 0, 0.0, False, False)
            buf.update_priorities([0], [9.0])
        for i in range(k):
            one.add(0, obs[i], int(action[i]), float(reward[i]), bool(term[i]), bool(trunc[i]),
                    next_obs=nxt[i] if term[i] or trunc[i] else None)
        many.add_many(0, obs, action, reward, term, trunc, next_obs=nxt)
        assert one.head(0) == many.head(0) == 1 + k + 3
        for i in range(one.head(0)):
            assert one.priority(i) == many.priority(i), i
        assert many.priority(5) == pytest.approx(9.0, rel=1e-5) and many.priority(11) == 0.0  # 11: step 9's terminal obs
        assert many._h.priority_tree_consistent()
        one.seed(1)
        many.seed(1)
        a, b = one.sample(16), many.sample(16)
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.weight, b.weight)
