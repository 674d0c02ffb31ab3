"""Atari through rtcore.make: realtime defaults, observations, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rtcore
from rtcore.envs.atari import AtariEnv


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5", "ALE/Boxing-v5", "ALE/Krull-v5", "ALE/NameThisGame-v5"])
def test_paper_games_step_at_60hz_with_84x84_frames(env_id):
    env = rtcore.make(env_id)
    try:
        assert isinstance(env, AtariEnv)
        assert env.frame_time == pytest.approx(1 / 60) and env.default_action == 0
        assert env.action_meanings[0] == "NOOP"
        obs, info = env.reset(seed=0)
        assert obs.shape == (84, 84) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
        for _ in range(20):
            obs, reward, terminated, truncated, info = env.step(env.default_action)
        assert obs.shape == (84, 84) and not terminated and "lives" in info
    finally:
        env.close()


def test_no_frame_skip_and_no_sticky_actions_by_default():
    env = rtcore.make("ALE/Pong-v5")
    assert env._ale.getFloat("repeat_action_probability") == 0.0
    env.reset(seed=0)
    start = env._ale.getEpisodeFrameNumber()
    env.step(0)
    assert env._ale.getEpisodeFrameNumber() == start + 1
    env.close()
    env = rtcore.make("ALE/Pong-v5", frame_skip=4, repeat_action_probability=0.25)
    env.reset(seed=0)
    start = env._ale.getEpisodeFrameNumber()
    env.step(0)
    assert env._ale.getEpisodeFrameNumber() == start + 4 and env.frame_time == pytest.approx(4 / 60)
    assert env._ale.getFloat("repeat_action_probability") == 0.25
    env.close()


def test_same_seed_same_frames():
    a, b = rtcore.make("ALE/Breakout-v5"), rtcore.make("ALE/Breakout-v5")
    oa, ob = a.reset(seed=7)[0], b.reset(seed=7)[0]
    for t in range(50):
        np.testing.assert_array_equal(oa, ob)
        oa, ob = a.step(t % 4)[0], b.step(t % 4)[0]
    a.close()
    b.close()


def test_observation_is_the_resized_ale_grayscale_screen():
    from rtcore.envs.preprocess import Preprocessor

    env = rtcore.make("ALE/Pong-v5")
    obs, _ = env.reset(seed=1)
    for _ in range(60):
        obs = env.step(0)[0]
    screen = env._ale.getScreenGrayscale()
    np.testing.assert_array_equal(obs, Preprocessor(screen.shape)(screen))
    assert obs.std() > 0  # not a blank frame
    env.close()


def test_unknown_ids_are_refused_with_suggestions():
    with pytest.raises(ValueError, match=r"unknown Atari env id 'ALE/Pongg-v5'.*did you mean ALE/Pong-v5"):
        rtcore.make("ALE/Pongg-v5")
    with pytest.raises(ValueError, match=r"unknown env id 'NoSuchGame-v9': expected ALE/<Game>-v5"):
        rtcore.make("NoSuchGame-v9")  # (CartPole-v1 is a Gymnasium id: tests/test_envs_any.py)
    with pytest.raises(ValueError, match="did you mean gb/Tetris"):
        rtcore.make("gb/tetris")
    with pytest.raises(TypeError, match="env_id must be a string"):
        rtcore.make(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", [6, -1, 1.5, "1", None, True])
def test_actions_outside_the_space_are_refused(action):
    env = rtcore.make("ALE/Pong-v5")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside the action space Discrete\(6\) of ALE/Pong-v5"):
        env.step(action)
    env.step(np.int64(5))  # numpy ints are fine
    env.close()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="frame_skip must be an int >= 1"):
        rtcore.make("ALE/Pong-v5", frame_skip=0)
    with pytest.raises(ValueError, match="repeat_action_probability must be in"):
        rtcore.make("ALE/Pong-v5", repeat_action_probability=2.0)


def test_passes_the_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = rtcore.make("ALE/Pong-v5")
    check_env(env, skip_render_check=True)  # any checker warning is an error under pytest's filterwarnings
    env.close()
