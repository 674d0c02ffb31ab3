"""The env driver: realtime stepping, inaction and delay accounting, replay contents, crashes."""

from __future__ import annotations

import functools
import time

import gymnasium as gym
import numpy as np
import pytest

import rtcore
from rtcore.envs.driver import EnvDriver


class ScriptedEnv(gym.Env):
    """A tiny deterministic env that also plays a scripted agent, so accounting can be checked exactly.

    obs = [episode, t, last action applied, 0] (int64); reward = the action applied; episodes last
    ``length`` steps. ``script[g] = (action, lag)`` makes the env post ``action`` to the ActionBoard right
    after its global step ``g``, claiming it was computed from the observation ``lag`` steps before the
    newest one: the driver applies it on the next tick, with delay exactly ``lag``. ``crash_at`` raises
    inside step.
    """

    default_action = 0
    frame_time = 1 / 200

    def __init__(self, action_board=None, script=None, length=1000, crash_at=None, n_actions=5):
        self.observation_space = gym.spaces.Box(0, 2**40, (4,), np.int64)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.board, self.script, self.length, self.crash_at = action_board, script or {}, length, crash_at
        self.episode, self.g = -1, 0  # g: global steps so far (= the newest observation's step index)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.array([self.episode, 0, -1, 0]), {}

    def step(self, action):
        if self.crash_at is not None and self.g == self.crash_at:
            raise RuntimeError(f"emulator exploded at step {self.g}")
        self.t += 1
        self.g += 1
        if self.g in self.script:
            a, lag = self.script[self.g]
            self.board.post(a, self.g - lag, 0)
        return np.array([self.episode, self.t, int(action), 0]), float(action), self.t >= self.length, False, {}


def boards(obs_shape=(4,), dtype="int64"):
    return rtcore.ObsBoard(obs_shape, dtype=dtype), rtcore.ActionBoard()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# --- exact accounting, in process ----------------------------------------------------------------------


def test_delay_and_inaction_accounting_is_exact():
    obs_board, action_board = boards()
    # after step g the env posts an action computed `lag` steps back
    script = {3: (1, 0), 4: (2, 3), 5: (3, 1), 9: (4, 7), 10: (1, 0), 11: (2, 0)}
    replay = rtcore.ReplayBuffer(64, (4,), obs_dtype="int64")
    env_fn = functools.partial(ScriptedEnv, action_board, script, 1000)
    drv = EnvDriver(env_fn, obs_board, action_board, replay=replay)
    try:
        st = drv.run_inline(15, paced=False)
        # posted after step g, taken on the next tick: applied to the transition from observation g
        applied = dict(script)  # observation step -> (action, delay)
        assert st.steps == 15 and st.default_steps == 15 - len(script)
        assert st.inaction_fraction == pytest.approx((15 - len(script)) / 15)
        expected_hist = np.bincount([lag for _, lag in script.values()], minlength=8)
        np.testing.assert_array_equal(st.delay_hist[:8], expected_hist)
        assert st.delay_hist[8:].sum() == 0
        assert st.delay_mean == pytest.approx(np.mean([lag for _, lag in script.values()]))
        assert st.last_obs_step == 15
        # the replay buffer holds what the env saw, with the driver's labels
        batch = replay.sample(14)
        for i in range(14):
            obs, nxt = batch.obs[i, -1], batch.next_obs[i, -1]
            step = int(obs[1])  # the step index of the observation (one episode: t == step)
            action, delay = applied.get(step, (0, 0))
            assert int(batch.action[i]) == action == int(nxt[2]) and float(batch.reward[i]) == action
            assert bool(batch.was_default[i]) == (step not in applied)
            assert int(batch.delay[i]) == delay
            assert int(nxt[1]) == step + 1
        _, newest = obs_board.read()
        assert newest == 15
    finally:
        drv.close()
        replay.close()
        obs_board.close()
        action_board.close()


def test_episodes_resets_and_returns_are_counted():
    obs_board, action_board = boards()
    script = {g: (2, 0) for g in range(1, 40, 2)}  # every other step gets action 2 (reward 2)
    drv = EnvDriver(functools.partial(ScriptedEnv, action_board, script, 10), obs_board, action_board)
    try:
        st = drv.run_inline(40, paced=False)
        assert st.episodes == 4 and st.resets == 4 and st.episode_lengths == [10] * 4
        # actions are applied from the odd observation steps: 5 per episode of 10 steps
        assert st.episode_returns == [10.0] * 4 and st.mean_return == 10.0
        assert st.reset_time_total > 0 and st.reset_time_max >= st.reset_time_mean > 0
        # the accounting pickles as its segment name: another handle (another process) sees the same
        import pickle

        other = pickle.loads(pickle.dumps(drv.block))
        assert other.name == drv.block.name and other.snapshot().as_dict() == st.as_dict()
        other.close()
        stack, step = obs_board.read()
        assert step == 40 and int(np.asarray(stack).reshape(-1, 4)[-1][0]) == 4  # the 5th episode's first frame
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


def test_an_action_outside_the_space_is_a_clear_error():
    obs_board, action_board = boards()
    drv = EnvDriver(functools.partial(ScriptedEnv, action_board, {2: (9, 0)}), obs_board, action_board)
    try:
        with pytest.raises(ValueError, match=r"the agent posted action 9, outside the env's Discrete\(5\)"):
            drv.run_inline(5, paced=False)
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


# --- the driver process ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_pong_at_60hz_without_agent_takes_the_default_action():
    obs_board, action_board = boards((84, 84), "uint8")
    drv = EnvDriver(functools.partial(rtcore.make, "ALE/Pong-v5"), obs_board, action_board)
    try:
        drv.start()
        wait_for(lambda: drv.stats.steps >= 150 or not drv.alive, 40, "150 driver steps")
        drv.stop()
        st = drv.stats
        assert drv.exitcode == 0 and drv.error is None and st.state == "stopped"
        assert st.frequency == pytest.approx(60.0)
        assert st.steps >= 150 and st.inaction_fraction >= 0.99
        # bounded lateness, as counts: almost no tick ran over its period or was skipped
        assert st.overruns <= 0.05 * st.steps and st.missed_ticks <= 0.05 * st.steps
        assert st.lateness_max < 1.0 and st.cost_mean < 1 / 60
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


def _agent(obs_board, action_board, stop_at):
    """Posts an action for every new frame, computed from that frame (woken by the board, no polling)."""
    last = -1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            obs_board.wait_step(last, timeout=0.1)
        except TimeoutError:
            continue
        _, step = obs_board.read()
        if step >= stop_at:
            return
        action_board.post(1 + step % 4, step, 0)
        last = step


@pytest.mark.timeout(60)
def test_an_agent_posting_every_tick_leaves_no_inaction():
    import multiprocessing as mp

    obs_board, action_board = boards()
    drv = EnvDriver(functools.partial(ScriptedEnv, length=10**9), obs_board, action_board, frequency=100)
    agent = mp.get_context("spawn").Process(target=_agent, args=(obs_board, action_board, 10**9), daemon=True)
    try:
        drv.start()
        agent.start()
        wait_for(lambda: drv.stats.steps - drv.stats.default_steps >= 20, 30, "the agent's first actions")
        a = drv.stats
        wait_for(lambda: drv.stats.steps >= a.steps + 150, 30, "150 more steps")
        b = drv.stats
        window = b.steps - a.steps
        assert (b.default_steps - a.default_steps) <= 0.05 * window  # ~0: an action is ready every tick
        # the agent computes from the newest frame: delay 0, occasionally 1 when a tick beats it
        assert b.delay_hist[:2].sum() >= 0.95 * (b.steps - b.default_steps)
        # live snapshots are consistent across fields while the driver writes (seqlock)
        for _ in range(300):
            s = drv.stats
            assert s.delay_hist.sum() == s.steps - s.default_steps
    finally:
        drv.stop()
        agent.kill()
        agent.join(5)
        drv.close()
        obs_board.close()
        action_board.close()


@pytest.mark.timeout(60)
def test_a_crash_inside_the_env_ends_the_driver_cleanly_with_the_reason():
    obs_board, action_board = boards()
    replay = rtcore.ReplayBuffer(64, (4,), obs_dtype="int64")
    drv = EnvDriver(functools.partial(ScriptedEnv, crash_at=25), obs_board, action_board, replay=replay)
    try:
        drv.start()
        drv.join(30)
        assert not drv.alive and drv.exitcode == 1
        assert drv.error == "RuntimeError: emulator exploded at step 25"
        assert "raise RuntimeError" in drv.error_detail
        st = drv.stats
        assert st.state == "crashed" and st.steps == 25
    finally:
        drv.close()
        replay.close()
        obs_board.close()
        action_board.close()


def _orphaning_parent(conn):
    """Starts a driver, reports its pid and segment names, then dies without any cleanup (like SIGKILL)."""
    import os

    obs_board, action_board = boards()
    drv = EnvDriver(functools.partial(ScriptedEnv, length=10**9), obs_board, action_board, frequency=100)
    drv.start()
    wait_for(lambda: drv.stats.steps > 0, 30, "the first step")
    conn.send((drv.pid, [obs_board.name, action_board.name, drv.block.name]))
    os._exit(0)


@pytest.mark.timeout(60)
def test_a_driver_whose_parent_dies_stops_by_itself():
    import multiprocessing as mp

    import psutil

    from rtcore import _core

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    parent = ctx.Process(target=_orphaning_parent, args=(send,))
    parent.start()
    pid, names = None, []
    try:
        assert recv.poll(30), "the parent did not start its driver"
        pid, names = recv.recv()
        parent.join(10)

        def gone():
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(gone, 10, "the orphaned driver to stop")
    finally:
        if parent.is_alive():
            parent.kill()
        if pid is not None and psutil.pid_exists(pid):
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        for name in names:  # the dead parent owned these: unlink them as its supervisor would
            if _core.segment_exists(name):
                _core.unlink_segment(name)


def _broken_env():
    raise FileNotFoundError("Game Boy ROM 'x.gb' does not exist")


@pytest.mark.timeout(60)
def test_an_env_that_cannot_be_built_is_reported():
    obs_board, action_board = boards()
    drv = EnvDriver(_broken_env, obs_board, action_board)
    try:
        drv.start()
        drv.join(30)
        assert drv.exitcode == 1 and drv.error == "FileNotFoundError: Game Boy ROM 'x.gb' does not exist"
        assert drv.stats.steps == 0
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


def test_game_boy_test_rom_through_the_driver():
    obs_board, action_board = boards((84, 84), "uint8")
    drv = EnvDriver(functools.partial(rtcore.make, "gb/TestRom"), obs_board, action_board)
    try:
        st = drv.run_inline(50, paced=False)
        assert st.steps == 50 and st.default_steps == 50 and st.emulator_mean > 0
        frame, step = obs_board.read()
        assert step == 50 and np.asarray(frame).shape[-2:] == (84, 84)
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


def test_boards_of_another_frame_shape_are_refused():
    obs_board, action_board = boards((84, 84), "uint8")
    drv = EnvDriver(ScriptedEnv, obs_board, action_board)
    try:
        with pytest.raises(ValueError, match=r"the ObsBoard holds frames of shape \(84, 84\), but the env's "
                                             r"observations have shape \(4,\)"):
            drv.run_inline(3, paced=False)
    finally:
        drv.close()
        obs_board.close()
        action_board.close()


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="env_fn must be a callable"):
        EnvDriver("ALE/Pong-v5", None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frequency must be a positive number"):
        EnvDriver(ScriptedEnv, None, None, frequency=0)
    with pytest.raises(ValueError, match="stream must be an int >= 0"):
        EnvDriver(ScriptedEnv, None, None, stream=-1)


def test_random_default_action_applies_seeded_random_actions_on_inaction_steps():
    """--default-action random (the authors' --random_not_noop): every inaction step applies a uniformly
    random action from a stream seeded by (seed, stream); still counted as inaction; a posted action wins."""
    applied = {}
    for seed in (3, 3, 4):
        obs_board, action_board = boards()
        replay = rtcore.ReplayBuffer(64, (4,), obs_dtype="int64")
        env_fn = functools.partial(ScriptedEnv, action_board, {5: (2, 0)}, 1000)
        drv = EnvDriver(env_fn, obs_board, action_board, replay=replay, seed=seed, default_action="random")
        try:
            st = drv.run_inline(40, paced=False)
            assert st.default_steps == 39
            replay.seed(0)
            by_step = {}
            for _ in range(30):  # seeded sampling with replacement: 1170 draws of 39 transitions cover them all
                batch = replay.sample(39)
                by_step.update({int(batch.obs[i, -1][1]): (int(batch.action[i]), bool(batch.was_default[i])) for i in range(39)})
            assert sorted(by_step) == list(range(39))
        finally:
            drv.close()
            for o in (replay, obs_board, action_board):
                o.close()
        assert by_step[5] == (2, False)
        randoms = [a for s, (a, d) in sorted(by_step.items()) if d]
        assert all(d for s, (a, d) in by_step.items() if s != 5)
        assert set(randoms) <= set(range(5)) and len(set(randoms)) >= 3  # not the no-op every time
        applied.setdefault(seed, []).append(by_step)
    assert applied[3][0] == applied[3][1]  # same seed, same actions
    assert applied[3][0] != applied[4][0]
    with pytest.raises(ValueError, match="default_action must be one of"):
        EnvDriver(functools.partial(ScriptedEnv), None, None, default_action="noise")
