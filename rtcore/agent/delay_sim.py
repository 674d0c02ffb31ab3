"""The paper's delay simulation with the run's agent: the env pauses while the agent thinks, and the
thinking time is reproduced in env frames by :class:`rtcore.envs.delay.DelayWrapper` (the authors'
``simulate_delay_atari.py`` / ``simulate_delay_tetris.py``).

One process, deterministic given the seed: act on the (delayed) observation with the online network
(epsilon-greedy, noisy layers when the config has them), store the step in the replay buffer (the
prioritized one when configured), then ``updates_per_step`` learner updates with the same
:class:`rtcore.agent.dqn.DQNLearner` the realtime learners run (here with no turnstile). Every
``RunConfig`` flag of the agent applies, ``--agent rainbow`` included.

``config.action_history`` K > 0 feeds the model the agent's last K actions (the delay-aware observation,
:mod:`rtcore.models.history`): here every action is applied at the agent step it is chosen (its effect
shows ``delay`` steps later), so the history holds the actions already on their way and the pending
slot is always none. At act time the loop keeps the last K actions of the episode; at sample time the
replay buffer gathers the same from the stored steps (``learn_on="applied"``: a stored step pairs the
delayed observation the agent acted on with its action).

    >>> from rtcore.agent.delay_sim import simulate_delay
    >>> out = simulate_delay(RunConfig(env="gb/TestRom", agent="rainbow"), delay=5, steps=2_000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rtcore.agent.config import RunConfig, epsilon_at

__all__ = ["DelaySimResult", "simulate_delay"]


@dataclass
class DelaySimResult:
    """What :func:`simulate_delay` did."""

    steps: int
    episodes: int
    returns: list[float]
    updates: int
    last_loss: float
    model: str


def simulate_delay(config: RunConfig, delay: int, steps: int, *, sequential: bool = False,
                   updates_per_step: int = 1) -> DelaySimResult:
    """Runs ``steps`` agent steps on ``rtcore.make(config.env, delay=delay, sequential=sequential)``.

    Learning starts after ``config.learning_starts`` transitions; each step then makes
    ``updates_per_step`` updates of ``config.batch_size``. Shared objects are created and closed here.
    """
    import torch

    import rtcore
    from rtcore.agent.dqn import DQNLearner, LearnerConfig
    from rtcore.agent.optim import STATE_ROWS, init_learner_state
    from rtcore.agent.telemetry import Control
    from rtcore.models import build_model
    from rtcore.models.history import NO_ACTION
    from rtcore.shared.params import bind_flat
    from rtcore.shared.shared_array import SharedArray

    cfg = config.validate().resolved()
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(updates_per_step, int) or updates_per_step < 0:
        raise ValueError(f"updates_per_step must be an integer >= 0, got {updates_per_step!r}")
    spec = cfg.model_spec()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = rtcore.make(cfg.env, delay=delay, sequential=sequential)
    closers: list[Any] = []
    try:
        obs, _ = env.reset(seed=cfg.seed)
        shape = tuple(obs.shape)
        n_actions = int(env.action_space.n)
        model = build_model(spec, cfg.frame_stack, n_actions, frame_size=shape[-2:], obs_shape=shape,
                            action_history=cfg.action_history)
        numel = sum(p.numel() for p in model.parameters())
        replay = rtcore.ReplayBuffer(cfg.replay_capacity, shape, obs_dtype=obs.dtype, frame_stack=cfg.frame_stack,
                                     n_step=cfg.n_step, gamma=cfg.gamma, prioritized=cfg.prioritized,
                                     alpha=cfg.priority_alpha, beta=cfg.priority_beta,
                                     action_history=cfg.action_history)
        closers.append(replay)
        params = rtcore.ParamStore(numel, buffers=3)
        closers.append(params)
        flat = bind_flat(model).numpy().copy()
        params.publish(flat)
        state = SharedArray((STATE_ROWS, numel), "float32")  # the learner state (rtcore.agent.optim)
        closers.append(state)
        init_learner_state(state.array, flat)
        control = np.zeros(Control.COUNT, np.int64)
        lcfg = LearnerConfig(batch_size=cfg.batch_size, lr=cfg.lr, adam_eps=cfg.adam_eps, double_dqn=cfg.double_dqn,
                             target_update=cfg.target_update, max_grad_norm=cfg.max_grad_norm,
                             prioritized=cfg.prioritized, priority_beta=cfg.priority_beta,
                             priority_beta_steps=cfg.priority_beta_steps, priority_eps=cfg.priority_eps)
        learner = DQNLearner(model, params=params, replay=replay, state=state.array, control=control, config=lcfg,
                             seed=cfg.seed)
        learner.join()
        k = cfg.frame_stack
        stack = np.repeat(obs[None], k, axis=0)  # padded with the episode's first frame, as the buffer does
        x = torch.from_numpy(stack).unsqueeze(0)
        K = cfg.action_history
        hist = np.full(K + 1, NO_ACTION, np.int64)  # the last K actions of the episode, then pending (none)
        h = torch.from_numpy(hist).unsqueeze(0)
        returns: list[float] = []
        ret, updates, loss = 0.0, 0, float("nan")
        for t in range(steps):
            eps = epsilon_at(t, cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)
            if rng.random() < eps:
                action = int(rng.integers(n_actions))
            else:
                with torch.no_grad():
                    q = learner.online(x) if K == 0 else learner.online(x, h)
                    action = int(q.argmax(1)[0])
            nxt, reward, term, trunc, _ = env.step(action)
            end = bool(term or trunc)
            replay.add(0, obs, action, float(reward), bool(term), bool(trunc), next_obs=nxt if end else None)
            ret += float(reward)
            if end:
                returns.append(ret)
                ret = 0.0
                obs, _ = env.reset()
                stack[:] = obs
                hist[:] = NO_ACTION
            else:
                if K:
                    hist[:K - 1] = hist[1:K]
                    hist[K - 1] = action
                obs = nxt
                stack[:-1] = stack[1:].copy()
                stack[-1] = obs
            if len(replay) >= max(cfg.learning_starts, cfg.batch_size):
                for _ in range(updates_per_step):
                    loss = learner.update().loss
                    updates += 1
        return DelaySimResult(steps, len(returns), returns, updates, loss, spec)
    finally:
        env.close()
        for c in reversed(closers):
            c.close()
