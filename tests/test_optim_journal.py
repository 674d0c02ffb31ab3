"""The learners' optimizer step is all or nothing (rtcore.agent.optim): a learner that dies anywhere in a
step leaves the shared state of the last committed step, which the next turn holder rolls forward
(completes a committed step's tail) or back (drops an uncommitted one). Checked against an uninterrupted
run of the same steps, bit for bit, with appliers SIGKILLed at random moments."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from rtcore.agent._proc import process_context
from rtcore.agent.optim import (STATE_ROWS, TARGET, LostTurn, NonFiniteStep, SharedAdam, StepJournal, bank, init_learner_state,
                                read_learner_state)
from rtcore.agent.telemetry import Control

TARGET_UPDATE = 3


class Replica:
    """The duck type StepJournal.apply takes (host memory: sync is a no-op)."""

    def __init__(self, state: np.ndarray, control: np.ndarray) -> None:
        self.state = torch.from_numpy(state)
        self.target = self.state[TARGET]
        self.adam = SharedAdam(self.state[1:3], control, lr=1e-3)

    def sync(self) -> None:
        pass


def grad_of(t: int, n: int) -> torch.Tensor:
    """Step t's gradient: a function of t alone, so any interleaving of deaths replays the same steps."""
    return torch.randn(1024, generator=torch.Generator().manual_seed(t)).repeat(n // 1024)


def reference(n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(7, n) state and control after ``steps`` uninterrupted steps."""
    state = init_learner_state(np.zeros((STATE_ROWS, n), np.float32), np.linspace(-1, 1, n, dtype=np.float32))
    control = np.zeros(Control.COUNT, np.int64)
    j, r = StepJournal(control), Replica(state, control)
    for t in range(1, steps + 1):
        j.apply([r], [grad_of(t, n)], TARGET_UPDATE, lambda t: t)
    return state, control


def applier(state_name: str, control_name: str, n: int, steps: int, published_name: str) -> None:
    """Applies steps until OPT_STEP reaches ``steps``; records each publish (step number) it made."""
    from rtcore.shared.shared_array import SharedArray

    torch.set_num_threads(1)
    st, ctl, pub = SharedArray.attach(state_name), SharedArray.attach(control_name), SharedArray.attach(published_name)
    control = ctl.array
    j, r = StepJournal(control), Replica(st.array, control)

    def publish(t: int) -> int:
        pub.array[t] += 1
        return t

    while int(control[Control.OPT_STEP]) < steps:
        t = int(control[Control.OPT_STEP]) + 1
        j.apply([r], [grad_of(t, n)], TARGET_UPDATE, publish)
    j.recover([r], publish)


def test_a_step_interrupted_before_its_commit_is_rolled_back():
    n = 1024
    want, want_c = reference(n, 5)
    state, control = reference(n, 4)
    j, r = StepJournal(control), Replica(state, control)
    t, _ = j.begin(TARGET_UPDATE)  # step 5 journaled, then half written and its learner "dies"
    bank(state, t)[:, : n // 2] = np.nan
    assert read_learner_state(state, control)[0] == 4  # a checkpoint taken now reads the whole step 4
    assert j.recover([r], lambda t: t) == "rolled back"
    assert control[Control.STEPS_ROLLED_BACK] == 1 and control[Control.OPT_STEP] == 4
    j.apply([r], [grad_of(5, n)], TARGET_UPDATE, lambda t: t)
    np.testing.assert_array_equal(bank(state, 5), bank(want, 5))
    np.testing.assert_array_equal(state[TARGET], want[TARGET])
    assert control[Control.UPDATES] == want_c[Control.UPDATES] == 5


def test_a_committed_step_whose_tail_was_interrupted_is_completed():
    n = 1024
    want, want_c = reference(n, 6)  # step 6 refreshes the target (6 % 3 == 0)
    state, c5 = reference(n, 5)
    control = c5.copy()
    j, r = StepJournal(control), Replica(state, control)
    t, refresh = j.begin(TARGET_UPDATE)
    assert t == 6 and refresh
    r.adam.step_into(bank(r.state, 5), bank(r.state, 6), grad_of(6, n), 6)
    j.commit(6)  # ... and its learner dies before the target refresh, the publish and the counters
    state[TARGET, :10] = -7.0  # even mid-copy of the target
    published = []
    assert j.recover([r], lambda t: published.append(t) or t) == "completed"
    assert published == [6] and control[Control.STEPS_COMPLETED] == 1
    np.testing.assert_array_equal(state[TARGET], want[TARGET])
    for k in (Control.OPT_STEP, Control.UPDATES, Control.TARGET_VERSION):
        assert control[k] == want_c[k], Control
    assert j.recover([r], lambda t: t) is None  # settled: nothing more to do


def test_a_non_finite_step_is_not_committed():
    n = 1024
    state = init_learner_state(np.zeros((STATE_ROWS, n), np.float32), np.ones(n, np.float32))
    control = np.zeros(Control.COUNT, np.int64)
    j, r = StepJournal(control), Replica(state, control)
    j.apply([r], [grad_of(1, n)], TARGET_UPDATE, lambda t: t)
    before = bank(state, 1).copy()
    g = grad_of(2, n)
    g[3] = float("inf")
    with pytest.raises(NonFiniteStep, match="non-finite value after optimizer step 2"):
        j.apply([r], [g], TARGET_UPDATE, lambda t: t)
    assert control[Control.OPT_STEP] == 1 and control[Control.UPDATES] == 1
    np.testing.assert_array_equal(bank(state, 1), before)
    assert j.recover([r], lambda t: t) is None  # the abort left nothing to settle


@pytest.mark.timeout(120)
def test_appliers_sigkilled_at_random_never_leave_a_half_applied_step(kill_alive):
    """Appliers in separate processes, each SIGKILLed after a random time, the next one going on: the
    state after the last step equals the uninterrupted run's bit for bit, every step was published at
    least once, and most kills landed inside a step (a recovery ran). The in-place
    Adam step this replaced fails here: a kill mid-step leaves a mix of two steps."""
    from rtcore.shared.shared_array import SharedArray

    n, steps = 1 << 21, 60  # 8 MiB rows: a step takes milliseconds, so most kills land inside one
    rng = np.random.default_rng(7)
    ctx = process_context()
    with SharedArray((STATE_ROWS, n), "float32") as st, SharedArray((Control.COUNT,), "int64") as ctl, \
            SharedArray((steps + 1,), "int64") as pub:
        init_learner_state(st.array, np.linspace(-1, 1, n, dtype=np.float32))
        procs: list = []
        kills = 0
        try:
            while int(ctl.array[Control.OPT_STEP]) < steps:
                p = ctx.Process(target=applier, args=(st.name, ctl.name, n, steps, pub.name), daemon=True)
                procs.append(p)
                p.start()
                start = int(ctl.array[Control.OPT_STEP])
                deadline = time.monotonic() + 60
                while int(ctl.array[Control.OPT_STEP]) == start and p.is_alive():  # let it start applying
                    assert time.monotonic() < deadline, "the applier made no progress"
                    time.sleep(0.001)
                if kills < 12 and p.is_alive():
                    time.sleep(float(rng.uniform(0.0, 0.05)))
                    os.kill(p.pid, signal.SIGKILL)
                    kills += 1
                p.join(60)
        finally:
            kill_alive(procs)
        control = ctl.array.copy()
        state = st.array.copy()
        published = pub.array.copy()
    want, want_c = reference(n, steps)
    assert kills == 12
    assert control[Control.STEPS_ROLLED_BACK] + control[Control.STEPS_COMPLETED] >= 4, control
    np.testing.assert_array_equal(bank(state, steps), bank(want, steps))
    np.testing.assert_array_equal(state[TARGET], want[TARGET])
    for k in (Control.OPT_STEP, Control.UPDATES, Control.TARGET_VERSION):
        assert control[k] == want_c[k]
    assert (published[1:] >= 1).all(), "a committed step was never published"


def test_a_learner_that_lost_its_turn_while_stalled_does_not_commit():
    """A (stalled past the turnstile's timeout) journaled step 5; B, the next turn holder, rolled it back
    and applied its own step 5. A wakes up: its commit is refused, B's step stands."""
    n = 1024
    want, _ = reference(n, 5)
    state, control = reference(n, 4)
    a, b = StepJournal(control, owner=111), StepJournal(control, owner=222)
    ra, rb = Replica(state, control), Replica(state, control)
    t, _ = a.begin(TARGET_UPDATE)
    assert b.recover([rb], lambda t: t) == "rolled back"
    b.apply([rb], [grad_of(5, n)], TARGET_UPDATE, lambda t: t)
    with pytest.raises(LostTurn, match="step 5 lost its turn"):
        a.commit(t)
    assert control[Control.OPT_STEP] == 5
    np.testing.assert_array_equal(bank(state, 5), bank(want, 5))
    del ra


@pytest.mark.parametrize("died", ["in the tail", "before the commit"])
def test_the_run_settles_a_step_its_last_learner_died_in(died):
    """No learner runs after the last one dies: the runner settles its step before the final checkpoint
    (rtcore.agent.dqn.settle_journal), so the update count, the target and the published version match the
    committed step. Before, the checkpoint kept UPDATES one behind OPT_STEP."""
    from rtcore import ParamStore
    from rtcore.agent.dqn import settle_journal

    n = 4096
    state = init_learner_state(np.zeros((STATE_ROWS, n), np.float32), np.linspace(-1, 1, n, dtype=np.float32))
    control = np.zeros(Control.COUNT, np.int64)
    store = ParamStore(n, buffers=3)
    try:
        store.publish(state[0])
        j, r = StepJournal(control), Replica(state, control)

        def publish(t: int) -> int:
            return store.publish(bank(r.state, t)[0].numpy())

        for t in (1, 2):
            j.apply([r], [grad_of(t, n)], TARGET_UPDATE, publish)
        # step 3 (it refreshes the target: 3 % TARGET_UPDATE == 0), and the learner dies
        t, refresh = j.begin(TARGET_UPDATE)
        assert t == 3 and refresh
        r.adam.step_into(bank(r.state, 2), bank(r.state, 3), grad_of(3, n), 3)
        if died == "in the tail":
            j.commit(3)
        version = store.version
        how = settle_journal(store, state, control)
        if died == "in the tail":
            assert how == "completed"
            assert control[Control.OPT_STEP] == control[Control.UPDATES] == control[Control.JOURNAL_DONE] == 3
            assert control[Control.TARGET_VERSION] == 1 and control[Control.STEPS_COMPLETED] == 1
            np.testing.assert_array_equal(state[TARGET], bank(state, 3)[0])
            assert store.version == version + 1
            with store.read() as (_, view):
                np.testing.assert_array_equal(view, bank(state, 3)[0])
        else:
            assert how == "rolled back"
            assert control[Control.OPT_STEP] == control[Control.UPDATES] == control[Control.JOURNAL_STEP] == 2
            assert control[Control.STEPS_ROLLED_BACK] == 1 and store.version == version
        assert settle_journal(store, state, control) is None  # settled once
    finally:
        store.close()
