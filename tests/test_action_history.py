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


# --- act time: the boards -------------------------------------------------------------------------


def test_board_history_pads_at_episode_start_and_resolves_the_pending_slot():
    from rtcore import ActionBoard, ObsBoard

    with ObsBoard((2,), "float32", frame_stack=1, action_history=2) as ob, ActionBoard() as ab:
        hist = np.empty(3, np.int64)
        _, step = ob.read(history=hist, actions=ab)
        assert step == -1 and hist.tolist() == [NO_ACTION] * 3
        ob.publish(np.zeros(2, np.float32), 0, episode_start=True)
        _, step = ob.read(history=hist, actions=ab)
        assert step == 0 and hist.tolist() == [NO_ACTION] * 3  # nothing before the episode, nothing pending
        ab.post(2, 0, 0)
        ob.read(history=hist, actions=ab)
        assert hist.tolist() == [NO_ACTION, NO_ACTION, 2]  # the post pending on the board
        assert ab.peek() == (2, 0, 0) and ab.pending  # peek takes nothing
        ob.read(history=hist)  # no ActionBoard: a tick not started has nothing pending
        assert hist[-1] == NO_ACTION
        ob.begin_apply(0)
        taken = ab.take()
        ob.end_apply(0, taken[0], was_default=False)
        ob.read(history=hist, actions=ab)
        assert hist.tolist() == [NO_ACTION, NO_ACTION, 2]  # taken by the tick of step 0: still on its way
        ob.publish(np.ones(2, np.float32), 1)
        ob.begin_apply(1)
        ob.end_apply(1, 1, was_default=True)
        ob.read(history=hist, actions=ab)
        assert hist.tolist() == [NO_ACTION, 2, NO_ACTION]  # a default action is applied, never pending
        ob.publish(np.ones(2, np.float32), 2)
        _, step = ob.read(history=hist, actions=ab)
        assert step == 2 and hist.tolist() == [2, 1, NO_ACTION]
        ob.publish(np.ones(2, np.float32), 3, episode_start=True)
        ob.read(history=hist, actions=ab)
        assert hist.tolist() == [NO_ACTION] * 3  # a new episode starts a new history
        with pytest.raises(ValueError, match="newest published step"):
            ob.begin_apply(2)
        with pytest.raises(ValueError, match="history"):
            ob.read(history=np.empty(2, np.int64))
        assert ObsBoard.attach(ob.name).action_history == 2
    with ObsBoard((2,), "float32") as plain:
        with pytest.raises(ValueError, match="action_history=0"):
            plain.read(history=np.empty(1, np.int64))


class _HookedEnv:
    """Catch whose step() calls ``hook`` (between the driver's take and its publish of the next frame)."""

    def __init__(self, hook):
        import rtcore

        self._env = rtcore.make("rtcore/Catch")
        self.hook = hook
        self.observation_space, self.action_space = self._env.observation_space, self._env.action_space
        self.default_action, self.frame_time = self._env.default_action, self._env.frame_time

    def reset(self, **kw):
        return self._env.reset(**kw)

    def step(self, action):
        self.hook()
        return self._env.step(action)

    def close(self):
        self._env.close()


@pytest.mark.timeout(120)
def test_features_seen_at_act_time_are_the_features_sampled(tmp_path, rng):
    """One worker (the real Actor: ObsBoard read with the pending post), the real driver tick, the real
    ring: every transition of a posted action samples (learn_on="acted") the history the worker saw."""
    import torch

    import rtcore
    from rtcore.agent.inference import Actor, ActorConfig
    from rtcore.envs.driver import _Loop
    from rtcore.envs.driver_stats import DriverStatsBlock
    from rtcore.models import build_model
    from rtcore.models.export import save_model
    from rtcore.shared.params import bind_flat
    from rtcore.shared.timer import monotonic

    K = 3
    torch.manual_seed(0)
    model = build_model("mlp:hidden=16", 1, 3, obs_shape=(10, 10), action_history=K)
    path = str(tmp_path / "model.pt")
    save_model(model, path, format="script")
    flat = bind_flat(model).detach().numpy().copy()
    worker = {"busy": None, "posts": []}  # busy: (ticks left, action, obs_step, history) of the action computed

    def maybe_act(in_tick: bool) -> None:
        """The worker: reads (and infers) now and then; posts 1-3 ticks after reading."""
        if worker["busy"] is None and rng.random() < 0.6:
            action, step, _, _ = actor.act()
            worker["busy"] = [int(rng.integers(1, 4)), action, step, actor.history.copy()]
        elif worker["busy"] is not None and worker["busy"][0] <= 0 and (in_tick or rng.random() < 0.7):
            _, action, step, hist = worker["busy"]
            ab.post(action, step, 0)
            worker["posts"].append((action, step, hist))
            worker["busy"] = None

    with rtcore.ObsBoard((10, 10), frame_stack=1, action_history=K) as ob, rtcore.ActionBoard() as ab, \
            rtcore.ReplayBuffer(4000, (10, 10), frame_stack=1, n_step=2, action_history=K) as rb, \
            rtcore.ParamStore(flat.size) as params:
        params.publish(flat)
        env = _HookedEnv(lambda: maybe_act(True) if rng.random() < 0.3 else None)
        block = DriverStatsBlock.create()
        actor = None
        try:
            loop = _Loop(env, ob, ab, rb, 0, block, seed=0)
            cfg = ActorConfig(model_path=path, device="cpu", backend="script", n_actions=3, epsilon_start=0.5,
                              epsilon_end=0.5, epsilon_decay_steps=1, inference_delay=0.0, seed=0, action_history=K)
            actor = Actor(cfg, ob, params, 1, (10, 10), np.uint8, action_board=ab)
            loop._reset(monotonic, first=True)
            applied = {}  # ring position -> (post, episode of its observation and of the tick)
            episode_of_step = {}
            for _ in range(1500):
                maybe_act(False)
                episode_of_step[loop.obs_step] = loop.episodes
                pos, taken, posts = rb.head(0), ab.taken, len(worker["posts"])
                loop.tick(monotonic, monotonic(), 0.0, 1.0)
                if worker["busy"] is not None:
                    worker["busy"][0] -= 1
                if ab.taken > taken:  # this tick applied the worker's newest post made before it
                    post = worker["posts"][posts - 1 if len(worker["posts"]) > posts else -1]
                    applied[pos] = post
            assert ab.superseded == 0  # one worker, never two posts before a take
            checked = pending = 0
            rb.seed(7)
            for _ in range(20):
                batch = rb.sample(256, learn_on="acted")
                for i in range(256):
                    j = int(batch.index[i])
                    if batch.was_default[i]:
                        continue
                    action, u, hist = applied[j]
                    assert batch.action[i] == action
                    step_j = u + int(batch.delay[i])
                    if episode_of_step.get(u) != episode_of_step.get(step_j):
                        continue  # acted across an episode start: the sampled stack stops at the episode's first frame
                    assert batch.action_history[i].tolist() == hist.tolist(), f"transition at {j} (obs step {u})"
                    checked += 1
                    pending += hist[-1] != NO_ACTION
            assert checked > 1000 and pending > 100
        finally:
            if actor is not None:
                actor.close()
            block.close()
            env.close()


# --- learning: the history helps under delay -----------------------------------------------------


def _catch_delay_config(seed: int, action_history: int, steps: int):
    from rtcore import RunConfig

    # Catch's learning settings of tests/test_learning.py, for a single-process DQN with one update per step
    return RunConfig(env="rtcore/Catch", model="mlp:hidden=64", frame_stack=1, seed=seed, replay_capacity=20_000,
                     learning_starts=500, batch_size=64, lr=3e-3, gamma=0.9, n_step=3, target_update=100,
                     epsilon_start=1.0, epsilon_end=0.02, epsilon_decay_steps=steps // 2,
                     action_history=action_history)


def _final_return(seed: int, action_history: int, delay: int, steps: int) -> float:
    from rtcore.agent.delay_sim import simulate_delay

    r = simulate_delay(_catch_delay_config(seed, action_history, steps), delay=delay, steps=steps)
    return float(np.mean(r.returns[-50:]))


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("one_torch_thread")
def test_action_history_helps_under_delay_on_catch():
    """Catch seen 4 steps late (the delay simulation): the same DQN, budget and seed with and without the
    agent's last 4 actions as an input. Measured (10k steps, seeds 0-2, mean return of the last 50
    episodes, of 5; random play about -2): without 1.20, 1.44, 1.72; with 2.72, 2.24, 2.00."""
    without = _final_return(0, 0, delay=4, steps=10_000)
    with_history = _final_return(0, 4, delay=4, steps=10_000)
    assert with_history >= without + 0.75, f"with history {with_history:.2f}, without {without:.2f}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("one_torch_thread")
def test_action_history_helps_under_delay_on_catch_three_seeds():
    """The same comparison, 20k steps, median of seeds 0-2."""
    without = [_final_return(s, 0, 4, 20_000) for s in range(3)]
    with_history = [_final_return(s, 4, 4, 20_000) for s in range(3)]
    assert np.median(with_history) >= np.median(without) + 0.5, (without, with_history)


# --- the runner: workers and learners with a history; checkpoints keep K ------------------------


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_realtime_run_with_action_history_and_checkpoints_keep_k(tmp_path):
    import rtcore
    from rtcore import RunConfig
    from rtcore.agent.checkpoint import CheckpointMismatch, load_state
    from rtcore.agent.play import play

    run_dir = tmp_path / "run"
    cfg = RunConfig(env="rtcore/Catch", model="mlp:hidden=32", frame_stack=1, frequency=200.0, seconds=4.0,
                    workers="3", learners=1, inference_delay=0.01, action_history=2, learn_on="acted",
                    replay_capacity=4_000, learning_starts=64, batch_size=16, updates_per_step=0.0, seed=1,
                    quiet=True, plots=False, tensorboard=False, latency_iters=5, checkpoint_interval=0.0,
                    run_dir=str(run_dir))
    s = rtcore.run(cfg)
    assert s.stopped_by == "time" and s.env_error is None
    assert s.env_steps > 200 and s.learner_updates > 0 and s.delay_mean > 0
    state = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert state.identity.action_history == 2
    with pytest.raises(CheckpointMismatch, match="action_history: checkpoint has 2, this run 3"):
        rtcore.run(RunConfig.resumed(str(run_dir), action_history=3, seconds=1.0))
    with pytest.raises(CheckpointMismatch, match="action_history: checkpoint has 2, this run 0"):
        play(run_dir, 1.0, action_history=0, run_dir=str(tmp_path / "play"), quiet=True)


def test_action_history_is_validated():
    from rtcore import RunConfig
    from rtcore.models import build_model

    with pytest.raises(ValueError, match="action_history = -1: expected an integer in"):
        RunConfig(action_history=-1).validate()
    with pytest.raises(ValueError, match="action_history = 65"):
        RunConfig(action_history=65).validate()
    with pytest.raises(ValueError, match="action_history must be an integer"):
        build_model("mlp", 1, 3, obs_shape=(4,), action_history=1.5)


@pytest.mark.usefixtures("one_torch_thread")
def test_rainbow_learns_with_an_action_history_in_the_delay_simulation():
    """Every Rainbow part (noisy, C51 + dueling, prioritized replay) takes the history as its second input."""
    from rtcore import RunConfig
    from rtcore.agent.delay_sim import simulate_delay

    cfg = RunConfig(env="rtcore/Catch", agent="rainbow", model="mlp:hidden=32", frame_stack=1, action_history=2,
                    replay_capacity=2_000, learning_starts=64, batch_size=16, seed=0)
    r = simulate_delay(cfg, delay=2, steps=300)
    assert r.updates > 200 and np.isfinite(r.last_loss)
