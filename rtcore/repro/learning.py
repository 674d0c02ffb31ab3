"""``rtcore repro delay-learning``: learning curves under the paper's delay simulation, asynchronous
(delay only) against sequential (delay plus inaction), for the paper's delays 1, 5, 8, 70, 596 frames.

The delay simulation is :class:`rtcore.envs.delay.DelayWrapper` with ``convention="authors"`` (the
authors' ``simulate_delay_*.py``: ``--delay d`` for asynchronous, ``--delay d --noops d`` for
sequential), so a sequential agent spends ``d + 1`` env frames per action. Every run gets the same
budget of env frames. The learner is a single-process DQN (double DQN with rtcore's
:func:`rtcore.agent.dqn.dqn_loss`, Adam, a uniform replay ring, one update of batch 32 every 4 agent
steps as in the authors' Atari code, a target network refreshed every 1,000 updates, epsilon from 1 to
0.05 over the first 20 % of the budget). It trains on (delayed observation, action, reward, next delayed
observation): the MDP the agent sees.

Sizes. ``--quick``: MinAtar Breakout (sticky actions off), 3,000 frames per run, 3 seeds: minutes on a
2-core machine, too short to learn much (it checks the pipeline and shows the sequential runs' budget
going to no-ops). Full: MinAtar Breakout and Space Invaders, 500,000 frames per run, and the paper's
Atari games (ALE/Boxing-v5, ALE/Krull-v5, ALE/NameThisGame-v5; no frame skip, 84x84 grey) with
2,000,000 frames per run (a bigger machine, CUDA when present).

``--action-history K`` (``action_history``) feeds the network the agent's last K actions beside the
delayed observation (the delay-aware observation of :mod:`rtcore.models.history`; one-hot, none before
the episode start; the pending slot is always none here, since every action is applied at the agent
step it is chosen): with K >= the delay, the agent sees the actions already on their way. The network
keeps its layers; the one-hot history joins the features before the first fully connected layer.

MinAtar comes through ``rtcore.make("minatar/<Game>")`` when the installed rtcore has it, else through
a small wrapper private to this module (``_MinAtar``).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

from rtcore.repro._common import PAPER_FRAMES, pyplot, write_csv

__all__ = ["delay_learning", "run_one"]

QUICK_GAMES = (("minatar/Breakout", 3000),)
FULL_GAMES = (("minatar/Breakout", 500_000), ("minatar/SpaceInvaders", 500_000), ("ALE/Boxing-v5", 2_000_000),
              ("ALE/Krull-v5", 2_000_000), ("ALE/NameThisGame-v5", 2_000_000))
BINS = 12


class _MinAtar(gym.Env):
    """MinAtar (``minatar.Environment``) as a gymnasium env: channel-first float32 observations, the
    game's minimal action set, no-op default action (index 0 is MinAtar's no-op)."""

    default_action = 0
    frame_time = None

    def __init__(self, game: str, seed: int = 0, max_steps: int = 10_000) -> None:
        from minatar import Environment

        self._env = Environment(game, sticky_action_prob=0.0)
        self._env.seed(seed)
        self._actions = self._env.minimal_action_set()
        h, w, c = self._env.state_shape()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.max_steps, self.t = max_steps, 0

    def _obs(self) -> np.ndarray:
        return np.ascontiguousarray(self._env.state().transpose(2, 0, 1), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None):
        if seed is not None:
            self._env.seed(seed)
        self._env.reset()
        self.t = 0
        return self._obs(), {}

    def step(self, action: int):
        reward, done = self._env.act(self._actions[int(action)])
        self.t += 1
        return self._obs(), float(reward), bool(done), self.t >= self.max_steps, {}


def _make_env(env_id: str, seed: int) -> Any:
    if env_id.startswith("minatar/"):
        import rtcore

        try:
            return rtcore.make(env_id)
        except ValueError:  # this rtcore has no MinAtar envs: the private wrapper
            game = {"Breakout": "breakout", "SpaceInvaders": "space_invaders", "Asterix": "asterix",
                    "Freeway": "freeway", "Seaquest": "seaquest"}[env_id.split("/", 1)[1]]
            return _MinAtar(game, seed=seed)
    import rtcore

    return rtcore.make(env_id)


def _model(obs_shape: tuple[int, ...], n_actions: int, action_history: int = 0) -> Any:
    import torch.nn as nn

    if len(obs_shape) == 3 and obs_shape[1] <= 16 and action_history:  # the same layers, with the history
        return _MinAtarHistoryNet(obs_shape, n_actions, action_history)
    if len(obs_shape) == 3 and obs_shape[1] <= 16:  # MinAtar: the MinAtar paper's network
        c, h, w = obs_shape
        return nn.Sequential(nn.Conv2d(c, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * (h - 2) * (w - 2), 128),
                             nn.ReLU(), nn.Linear(128, n_actions))
    from rtcore.models import build_model

    return build_model("nature", 1, n_actions, action_history=action_history)


def _minatar_history_net_class() -> Any:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from rtcore.models.history import history_features

    class MinAtarHistoryNet(nn.Module):
        """The MinAtar net of :func:`_model` with the one-hot action history beside the conv features."""

        def __init__(self, obs_shape: tuple[int, ...], n_actions: int, action_history: int) -> None:
            super().__init__()
            c, h, w = obs_shape
            self.slots, self.tokens = action_history + 1, n_actions + 1
            self.torso = nn.Sequential(nn.Conv2d(c, 16, 3), nn.ReLU(), nn.Flatten())
            self.fc = nn.Linear(16 * (h - 2) * (w - 2) + history_features(action_history, n_actions), 128)
            self.out = nn.Linear(128, n_actions)

        def forward(self, x: Any, hist: Any) -> Any:
            h = hist.reshape(-1, self.slots).long()
            e = F.one_hot(torch.where(h < 0, h + self.tokens, h), self.tokens).flatten(1).float()
            return self.out(F.relu(self.fc(torch.cat([self.torso(x), e], 1))))

    return MinAtarHistoryNet


def _MinAtarHistoryNet(obs_shape: tuple[int, ...], n_actions: int, action_history: int) -> Any:
    return _minatar_history_net_class()(obs_shape, n_actions, action_history)


def run_one(env_id: str, delay: int, sequential: bool, frames: int, seed: int, device: str = "cpu",
            action_history: int = 0) -> list[tuple[int, float]]:
    """One DQN run on ``env_id`` under the authors' delay simulation; returns (frame, episode return) pairs.

    ``action_history`` K > 0: the network also sees the agent's last K actions (see the module docstring)."""
    import torch

    from rtcore.agent.dqn import dqn_loss
    from rtcore.envs.delay import DelayWrapper

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = DelayWrapper(_make_env(env_id, seed), delay, sequential=sequential, convention="authors")
    obs, _ = env.reset(seed=seed)
    shape, n_act = tuple(obs.shape), int(env.action_space.n)
    K = int(action_history)
    online = _model(shape, n_act, K).to(device)
    target = _model(shape, n_act, K).to(device)
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=2.5e-4, eps=1.5e-4)
    cap = min(100_000, frames)
    dt = np.uint8 if obs.dtype == np.uint8 else np.float32
    o_buf, n_buf = np.zeros((cap, *shape), dt), np.zeros((cap, *shape), dt)
    a_buf, r_buf, d_buf = np.zeros(cap, np.int64), np.zeros(cap, np.float32), np.zeros(cap, np.float32)
    hist = np.full(K + 1, -1, np.int64)  # the episode's last K actions (-1: none), then pending (always none)
    h_buf, nh_buf = np.zeros((cap, K + 1), np.int64), np.zeros((cap, K + 1), np.int64)
    q_of = (lambda net, x, h: net(x)) if K == 0 else (lambda net, x, h: net(x, h))  # noqa: E731
    size = ptr = steps = updates = used = 0
    ret, curve = 0.0, []
    while used < frames:
        eps = max(0.05, 1.0 - 0.95 * used / (0.2 * frames))
        if rng.random() < eps:
            a = int(rng.integers(n_act))
        else:
            with torch.no_grad():
                x = torch.as_tensor(obs[None], device=device).float()
                a = int(q_of(online, x, torch.as_tensor(hist[None], device=device)).argmax(1).item())
        nxt, r, term, trunc, info = env.step(a)
        used += info["frames"]
        ret += r
        o_buf[ptr], n_buf[ptr], a_buf[ptr], r_buf[ptr], d_buf[ptr] = obs, nxt, a, r, float(term)
        h_buf[ptr] = hist
        if K:
            hist[:K - 1] = hist[1:K]
            hist[K - 1] = a
        nh_buf[ptr] = hist
        ptr, size, steps = (ptr + 1) % cap, min(size + 1, cap), steps + 1
        obs = nxt
        if term or trunc:
            curve.append((used, ret))
            ret = 0.0
            obs, _ = env.reset()
            hist[:] = -1
        if steps % 4 == 0 and size >= 500:
            i = rng.integers(size, size=32)
            t = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
            loss, _ = dqn_loss(online, target, t(o_buf[i]).float(), t(a_buf[i]), t(r_buf[i]), 0.99 * (1 - t(d_buf[i])),
                               t(n_buf[i]).float(), hist=t(h_buf[i]) if K else None,
                               next_hist=t(nh_buf[i]) if K else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
            opt.step()
            updates += 1
            if updates % 1000 == 0:
                target.load_state_dict(online.state_dict())
    env.close()
    return curve


def _binned(curve: list[tuple[int, float]], frames: int) -> list[float]:
    """Mean episode return of the episodes ending in each of BINS equal spans of the budget (NaN if none)."""
    out = []
    for b in range(BINS):
        lo, hi = frames * b / BINS, frames * (b + 1) / BINS
        xs = [r for f, r in curve if lo < f <= hi]
        out.append(statistics.fmean(xs) if xs else float("nan"))
    return out


def delay_learning(quick: bool, out: str, seeds: int = 3, device: str | None = None,
                   action_history: int = 0) -> dict[str, Any]:
    """All runs, the CSV (one row per run and bin), the figure (one panel per game and delay).

    ``action_history`` K > 0: every agent also sees its last K actions (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    games = QUICK_GAMES if quick else FULL_GAMES
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for env_id, frames in games:
        for d in PAPER_FRAMES:
            for seq in (False, True):
                for s in range(seeds):
                    curve = run_one(env_id, d, seq, frames, s, dev, action_history)
                    for b, v in enumerate(_binned(curve, frames)):
                        rows.append({"env": env_id, "delay": d, "setting": "sequential" if seq else "asynchronous",
                                     "seed": s, "frames": int(frames * (b + 1) / BINS), "return": v,
                                     "episodes": len(curve), "action_history": action_history})
    os.makedirs(out, exist_ok=True)
    csv_path, fig_path = os.path.join(out, "delay_learning.csv"), os.path.join(out, "delay_learning.png")
    write_csv(csv_path, rows)
    plt = pyplot()
    fig, axes = plt.subplots(len(games), len(PAPER_FRAMES), figsize=(3.0 * len(PAPER_FRAMES), 2.6 * len(games)),
                             squeeze=False)
    final: dict[str, dict[str, float]] = {}
    for gi, (env_id, frames) in enumerate(games):
        for j, d in enumerate(PAPER_FRAMES):
            ax = axes[gi][j]
            for setting, color in (("asynchronous", "tab:blue"), ("sequential", "tab:red")):
                sel = [r for r in rows if r["env"] == env_id and r["delay"] == d and r["setting"] == setting]
                xs = sorted({r["frames"] for r in sel})
                per = [[r["return"] for r in sel if r["frames"] == x and not np.isnan(r["return"])] for x in xs]
                m = [statistics.fmean(v) if v else float("nan") for v in per]
                sd = [statistics.pstdev(v) if len(v) > 1 else 0.0 for v in per]
                ax.plot(xs, m, "-o", ms=2, color=color, label=setting)
                ax.fill_between(xs, np.subtract(m, sd), np.add(m, sd), color=color, alpha=0.15)
                last = [v for v in m[BINS // 2:] if not np.isnan(v)]
                final.setdefault(env_id, {})[f"{setting}_d{d}"] = round(statistics.fmean(last), 3) if last else None
            ax.set_title(f"{env_id}, delay {d}", fontsize=8)
            ax.set_xlabel("env frames", fontsize=7)
            if j == 0:
                ax.set_ylabel("episode return", fontsize=7)
                ax.legend(fontsize=6)
    hist = f", action history {action_history}" if action_history else ""
    fig.suptitle(f"DQN under the authors' delay simulation{hist} ({seeds} seeds, mean +- sd)", fontsize=9)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=70)
    plt.close(fig)
    return {"experiment": "delay-learning", "quick": quick, "figure": fig_path, "csv": csv_path, "device": dev,
            "games": [g for g, _ in games], "frames_per_run": {g: f for g, f in games}, "seeds": seeds,
            "action_history": action_history,
            "runs": len(games) * len(PAPER_FRAMES) * 2 * seeds, "return_second_half": final,
            "run_seconds": round(time.monotonic() - t0, 1)}
