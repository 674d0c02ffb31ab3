"""Any environment: rtcore/Catch, MinAtar, Gymnasium ids, ``package.module:factory``, and the observation adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rtcore
from rtcore.envs.adapter import ObservationSpec, RealtimeEnv


def play(env, policy, episodes: int, seed: int = 0) -> list[float]:
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total += r
            done = term or trunc
        returns.append(total)
    return returns


def test_catch_rules_and_scores():
    env = rtcore.make("rtcore/Catch")
    assert env.default_action == 1 and env.frame_time == pytest.approx(1 / 400)
    assert env.observation_space.shape == (10, 10) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert (obs == 255).sum() == 1 and (obs[-1] == 128).sum() == 3

    def follow(o):  # move the paddle's centre under the ball
        ball = np.argwhere(o == 255)[0][1]
        centre = np.argwhere(o[-1] == 128).mean()
        return 1 if abs(ball - centre) < 1 else (0 if ball < centre else 2)

    assert play(env, follow, 20) == [5.0] * 20  # a perfect policy catches every ball
    rng = np.random.default_rng(0)
    random = np.mean(play(env, lambda o: int(rng.integers(3)), 300))
    assert -3.0 < random < -1.0  # a random one misses most
    with pytest.raises(ValueError, match="Discrete"):
        env.step(3)


@pytest.mark.parametrize("game,channels,actions", [("Asterix", 4, 5), ("Breakout", 4, 3), ("Freeway", 7, 3),
                                                   ("Seaquest", 10, 6), ("SpaceInvaders", 6, 4)])
def test_minatar_games_give_channel_first_uint8(game, channels, actions):
    pytest.importorskip("minatar")
    env = rtcore.make(f"minatar/{game}")
    assert env.observation_space.shape == (channels, 10, 10) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == actions and env.default_action == 0 and env.frame_time == pytest.approx(0.01)
    obs, _ = env.reset(seed=1)
    again, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs, again)  # seeded
    assert obs.shape == (channels, 10, 10) and set(np.unique(obs)) <= {0, 255} and obs.any()
    for _ in range(20):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        assert obs.dtype == np.uint8 and obs.shape == (channels, 10, 10)
        if term:
            env.reset()
    env.close()


def test_unknown_minatar_game_names_the_games():
    with pytest.raises(ValueError, match="Breakout"):
        rtcore.make("minatar/Pong")


def test_gymnasium_id_needs_a_default_action_and_gives_float_vectors():
    with pytest.raises(ValueError, match="default_action"):
        rtcore.make("CartPole-v1")
    env = rtcore.make("CartPole-v1", default_action=0)
    assert env.default_action == 0 and env.frame_time is None
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and obs.dtype == np.float32
    assert env.observation_space.shape == (4,) and env.observation_space.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        rtcore.make("CartPole-v1", default_action=2)
    env = rtcore.make("CartPole-v1", default_action=1, frame_time=0.02)
    assert env.frame_time == 0.02


def test_factory_env_channel_last_frames_become_channel_first():
    env = rtcore.make("custom_env:make", default_action=0, height=7)
    assert isinstance(env, RealtimeEnv) and env.frame_time is None
    assert env.observation_space.shape == (3, 7, 16)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (3, 7, 16) and obs.flags.c_contiguous
    lit = int(np.argmax(obs.reshape(3, -1).sum(axis=1)))
    _, r, *_ = env.step(lit)
    assert r == 1.0


@pytest.mark.parametrize("env_id,message", [
    ("custom_env:missing", "has no attribute 'missing'"),
    ("custom_env:not_an_env", "expected a gymnasium.Env"),
    ("no_such_module_here:make", "cannot import module"),
    ("NoSuchGame-v0", "unknown env id"),
])
def test_bad_ids_are_clear_errors(env_id, message):
    with pytest.raises(ValueError, match=message):
        rtcore.make(env_id, default_action=0)


def test_observation_spec_decides_layout_and_dtype_in_one_place():
    hwc = ObservationSpec((10, 10, 4), np.dtype(bool))
    assert hwc.shape == (4, 10, 10) and hwc.dtype == np.uint8 and hwc.transpose
    frame = np.zeros((10, 10, 4), bool)
    frame[2, 3, 1] = True
    out = hwc(frame)
    assert out.shape == (4, 10, 10) and out[1, 2, 3] == 255 and out.sum() == 255
    assert ObservationSpec((3, 210, 160), np.dtype(np.uint8)).shape == (3, 210, 160)  # already channel-first
    assert ObservationSpec((210, 160, 3), np.dtype(np.uint8)).shape == (3, 210, 160)
    assert ObservationSpec((8, 8, 8), np.dtype(np.uint8), layout="hwc").transpose
    assert ObservationSpec((84, 84), np.dtype(np.uint8)).identity
    vec = ObservationSpec((5,), np.dtype(np.float64))
    assert vec.shape == (5,) and vec.dtype == np.float32 and vec(np.arange(5.0)).dtype == np.float32
    with pytest.raises(ValueError, match="float image frames"):
        ObservationSpec((10, 10), np.dtype(np.float32))
    with pytest.raises(ValueError, match="not supported"):
        ObservationSpec((2, 2, 2, 2), np.dtype(np.uint8))


def test_non_box_observations_and_non_discrete_actions_are_refused():
    class Weird(gym.Env):
        observation_space = gym.spaces.Discrete(4)
        action_space = gym.spaces.Discrete(2)
        default_action = 0

    with pytest.raises(ValueError, match="needs a Box"):
        RealtimeEnv(Weird())

    class Continuous(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    with pytest.raises(ValueError, match="Discrete actions"):
        RealtimeEnv(Continuous(), default_action=0)
