"""DelayWrapper semantics, step by step, on an env whose observation is its frame index."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rtcore.envs.delay import DelayWrapper


class FrameEnv(gym.Env):
    """obs = frame index; reward = the action applied (so the test sees which action ran on each frame);
    terminates after ``length`` frames. Records every applied action."""

    default_action = 0
    frame_time = 1 / 60

    def __init__(self, length: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(0, 10**6, (1,), np.int64)
        self.action_space = gym.spaces.Discrete(10)
        self.length = length
        self.applied: list[int] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.applied = []
        return np.array([0]), {}

    def step(self, action):
        self.applied.append(int(action))
        self.t += 1
        return np.array([self.t]), float(action), self.t >= self.length, False, {}


def test_zero_delay_is_the_env_itself():
    env = DelayWrapper(FrameEnv(), delay=0)
    obs, _ = env.reset()
    for t in range(1, 6):
        obs, r, *_ = env.step(t % 10)
        assert obs[0] == t and r == t % 10
    assert env.env.applied == [1, 2, 3, 4, 5]


def test_async_delay_returns_the_observation_from_d_frames_earlier():
    d = 3
    env = DelayWrapper(FrameEnv(), delay=d)
    obs, info = env.reset()
    assert obs[0] == 0 and info["obs_frame"] == 0
    for t in range(1, 12):
        obs, r, term, trunc, info = env.step(5)
        # after t frames the newest frame is t; the agent sees frame t - d (the first frame until then)
        assert obs[0] == max(0, t - d) == info["obs_frame"]
        assert info["frames"] == 1 and r == 5.0
    assert env.env.applied == [5] * 11  # every agent action applied at once, one frame each


def test_sequential_applies_d_default_actions_after_each_action():
    d = 2
    env = DelayWrapper(FrameEnv(), delay=d, sequential=True)
    env.reset()
    obs, r, term, trunc, info = env.step(7)
    # frame 1: the agent's 7, frames 2-3: default 0; the agent sees frame 1 (d frames before frame 3)
    assert env.env.applied == [7, 0, 0]
    assert obs[0] == 1 and info["obs_frame"] == 1 and info["frames"] == 3 and r == 7.0
    obs, r, *_ = env.step(4)
    assert env.env.applied == [7, 0, 0, 4, 0, 0] and obs[0] == 4 and r == 4.0


def test_sequential_stops_at_the_end_of_the_episode():
    env = DelayWrapper(FrameEnv(length=5), delay=3, sequential=True)
    env.reset()
    env.step(1)  # frames 1-4
    obs, r, term, trunc, info = env.step(2)  # frame 5 ends the episode: no defaults after it
    assert term and info["frames"] == 1 and env.env.applied == [1, 0, 0, 0, 2]
    assert obs[0] == 2  # frame 5 - d


def test_reset_refills_the_delay_line():
    env = DelayWrapper(FrameEnv(), delay=2)
    env.reset()
    for _ in range(5):
        env.step(1)
    obs, _ = env.reset()
    assert obs[0] == 0
    obs, *_ = env.step(1)
    assert obs[0] == 0  # frame 1 - 2 < 0: still the reset frame


def test_on_a_real_env_the_delayed_frames_are_the_env_frames():
    import rtcore

    base = rtcore.make("ALE/Pong-v5")
    plain = rtcore.make("ALE/Pong-v5")
    env = DelayWrapper(base, delay=4)
    obs, _ = env.reset(seed=3)
    frames = [plain.reset(seed=3)[0]]
    for t in range(1, 30):
        a = t % base.action_space.n
        obs, *_ = env.step(a)
        frames.append(plain.step(a)[0])
        np.testing.assert_array_equal(obs, frames[max(0, t - 4)])
    assert env.default_action == 0 and env.frame_time == pytest.approx(1 / 60)
    env.close()
    plain.close()


def test_bad_delay_is_refused():
    with pytest.raises(ValueError, match="delay must be an int >= 0"):
        DelayWrapper(FrameEnv(), delay=-1)
    with pytest.raises(ValueError, match="delay must be an int >= 0"):
        DelayWrapper(FrameEnv(), delay=1.5)  # type: ignore[arg-type]


def test_make_wraps_with_a_delay():
    import rtcore

    env = rtcore.make("gb/TestRom", delay=5, sequential=True)
    assert isinstance(env, DelayWrapper) and env.delay == 5 and env.sequential and env.default_action == 0
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert info["frames"] == 6
    env.close()
    with pytest.raises(ValueError, match="sequential=True needs delay"):
        rtcore.make("gb/TestRom", sequential=True)
    with pytest.raises(ValueError, match="delay must be an int >= 0"):
        rtcore.make("gb/TestRom", delay=-2)


def test_authors_async_delay_is_d_minus_1_frames_with_zero_padding():
    """Hand-worked, d = 3: the authors' obs_history starts as [0, 0, 0, obs0][1:] = [0, 0, obs0] and each
    step appends the newest frame and drops the oldest; the agent acts on obs_history[0]."""
    env = DelayWrapper(FrameEnv(), delay=3, convention="authors")
    env.env.reset()
    obs, info = env.reset()
    seen, frames = [obs.copy()], [info["obs_frame"]]
    for _ in range(4):
        obs, r, term, trunc, info = env.step(7)
        seen.append(obs.copy())
        frames.append(info["obs_frame"])
        assert info["frames"] == 1 and r == 7.0
    # two zero pads (frames "-2", "-1"), then frames 0, 1, 2: two frames old
    assert [int(o[0]) for o in seen] == [0, 0, 0, 1, 2]
    assert frames == [-2, -1, 0, 1, 2]
    assert seen[0].dtype == seen[1].dtype and seen[0].shape == seen[1].shape
    assert env.env.applied == [7] * 4


def test_authors_delay_1_and_0_act_on_the_newest_frame():
    for d in (0, 1):
        env = DelayWrapper(FrameEnv(), delay=d, convention="authors")
        obs, info = env.reset()
        assert obs[0] == 0 and info["obs_frame"] == 0
        for t in range(1, 4):
            obs, *_, info = env.step(1)
            assert obs[0] == t == info["obs_frame"]


def test_authors_sequential_baseline_is_d_minus_1_times_d_plus_1_frames_old():
    """Hand-worked, --delay 2 --noops 2: each step applies the action then two no-ops (3 frames) and
    returns the last frame; the agent acts on the observation one agent step old: (2 - 1) * (2 + 1) = 3
    frames, plus the 2 no-ops per action."""
    d = 2
    env = DelayWrapper(FrameEnv(), delay=d, sequential=True, convention="authors")
    obs, info = env.reset()
    assert obs[0] == 0 and info["obs_frame"] == -3  # the zero pad stands for one agent step before the start
    out = []
    for a in (4, 5, 6):
        obs, r, term, trunc, info = env.step(a)
        out.append((int(obs[0]), info["obs_frame"], info["frames"], r))
    # newest frames after each step: 3, 6, 9; the agent sees one step back: 0, 3, 6
    assert out == [(0, 0, 3, 4.0), (3, 3, 3, 5.0), (6, 6, 3, 6.0)]
    assert env.env.applied == [4, 0, 0, 5, 0, 0, 6, 0, 0]
    assert env._frame - out[-1][1] == (d - 1) * (d + 1)


def test_convention_is_checked():
    with pytest.raises(ValueError, match="convention must be one of"):
        DelayWrapper(FrameEnv(), delay=1, convention="paper")


def test_make_passes_the_delay_convention(tmp_path):
    import rtcore
    from rtcore.envs.testrom import write_rom

    env = rtcore.make("gb/TestRom", rom=write_rom(tmp_path / "t.gb"), delay=3, delay_convention="authors")
    try:
        assert isinstance(env, DelayWrapper) and env.convention == "authors"
        obs, info = env.reset(seed=0)
        assert info["obs_frame"] == -2 and not obs.any()  # two zero pads before the episode start
    finally:
        env.close()
