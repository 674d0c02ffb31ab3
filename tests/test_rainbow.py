"""The Rainbow agent: config flags, the learner's losses with prioritized replay, a short realtime run
with ``--agent rainbow`` and the delay simulation (DelayWrapper)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rtcore.agent.config import RunConfig, add_config_arguments  # noqa: F401  (the CLI is generated from it)
from rtcore.agent.dqn import DQNLearner, LearnerConfig, beta_at, c51_losses, td_losses
from rtcore.agent.telemetry import Control
from rtcore.models import build_model
from rtcore.models.distributional import project_distribution


def test_rainbow_turns_on_the_authors_combination():
    c = RunConfig(agent="rainbow").validate().resolved()
    assert (c.dueling, c.noisy, c.distributional, c.double_dqn, c.prioritized) == (True, True, True, True, True)
    assert (c.atoms, c.v_min, c.v_max, c.n_step) == (51, 0.0, 200.0, 3)
    assert (c.priority_alpha, c.priority_beta, c.priority_beta_steps, c.priority_eps) == (0.2, 0.6, 0, 1e-6)
    assert c.max_grad_norm == 10.0
    assert RunConfig(agent="rainbow", model="nature").model_spec() == "nature:k=2,dueling=1,noisy=1,atoms=51,vmin=0,vmax=200"
    assert RunConfig(model="impala:k=1", noisy=True).model_spec() == "impala:k=1,noisy=1"
    assert RunConfig(noisy=True).model_spec() == "nature:k=2,noisy=1"  # the default model
    plain = RunConfig().resolved()
    assert not (plain.noisy or plain.distributional or plain.prioritized)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(agent="c51"), "agent"),
        (dict(atoms=1), "atoms"),
        (dict(v_min=5.0, v_max=5.0), "v_max"),
        (dict(priority_alpha=1.5), "priority_alpha"),
        (dict(priority_beta=-0.1), "priority_beta"),
        (dict(priority_beta_steps=-1), "priority_beta_steps"),
        (dict(priority_eps=0.0), "priority_eps"),
    ],
)
def test_bad_rainbow_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**kwargs).validate()


def test_cli_has_the_rainbow_flags():
    out = subprocess.run([sys.executable, "-m", "rtcore", "run", "--help"], capture_output=True, text=True, timeout=60)
    for flag in ("--agent", "--noisy", "--distributional", "--prioritized", "--priority-alpha", "--priority-beta",
                 "--atoms", "--v-min", "--v-max"):
        assert flag in out.stdout, flag


def test_beta_schedule():
    assert beta_at(0, 0.6, 0) == beta_at(10**6, 0.6, 0) == 0.6
    assert beta_at(0, 0.4, 100) == 0.4 and beta_at(50, 0.4, 100) == pytest.approx(0.7) and beta_at(500, 0.4, 100) == 1.0


def test_c51_losses_match_the_projection_by_hand():
    torch.manual_seed(0)
    m = build_model("nature:k=0.5,hidden=16,atoms=5,vmin=0,vmax=4", 1, 3, frame_size=(36, 36))
    obs = torch.randint(0, 256, (2, 1, 36, 36), dtype=torch.uint8)
    nxt = torch.randint(0, 256, (2, 1, 36, 36), dtype=torch.uint8)
    action, reward, discount = torch.tensor([0, 2]), torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.0])
    losses, q, prio = c51_losses(m, m, obs, action, reward, discount, nxt, double_dqn=True)
    with torch.no_grad():
        p_next = m.log_dist(nxt).exp()
        best = m(nxt).argmax(1)
        target = project_distribution(p_next[torch.arange(2), best], reward, discount, m.head.support)
        want = -(target * m.log_dist(obs)[torch.arange(2), action]).sum(1)
    torch.testing.assert_close(losses.detach(), want)
    torch.testing.assert_close(prio, want)
    torch.testing.assert_close(q, m(obs).detach()[torch.arange(2), action])
    # A terminal transition's target is the reward alone: all mass on z = 0.5 -> half on atoms 0 and 1.
    torch.testing.assert_close(target[1], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]))
    l2, _, td = td_losses(build_model("nature:k=0.5,hidden=16", 1, 3, frame_size=(36, 36)),
                          build_model("nature:k=0.5,hidden=16", 1, 3, frame_size=(36, 36)),
                          obs, action, reward, discount, nxt)
    assert l2.shape == td.shape == (2,) and bool((td >= 0).all())


def test_learner_update_with_prioritized_replay_sets_priorities():
    import rtcore
    from rtcore.agent.optim import STATE_ROWS, init_learner_state
    from rtcore.shared.params import bind_flat
    from rtcore.shared.shared_array import SharedArray

    torch.manual_seed(0)
    spec = "nature:k=0.5,hidden=16,dueling=1,noisy=1,atoms=11,vmin=-5,vmax=5"
    model = build_model(spec, 2, 3, frame_size=(36, 36))
    numel = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    with rtcore.ReplayBuffer(500, (36, 36), frame_stack=2, n_step=3, prioritized=True, alpha=0.2, beta=0.6) as rb, \
            rtcore.ParamStore(numel, buffers=3) as params, SharedArray((STATE_ROWS, numel), "float32") as state:
        for t in range(120):
            end = t % 40 == 39
            rb.add(0, rng.integers(0, 256, (36, 36), dtype=np.uint8), int(t % 3), float(t % 5), end, False,
                   next_obs=np.zeros((36, 36), np.uint8) if end else None)
        flat = bind_flat(model).numpy().copy()
        params.publish(flat)
        init_learner_state(state.array, flat)
        control = np.zeros(Control.COUNT, np.int64)
        cfg = LearnerConfig(batch_size=16, lr=1e-3, prioritized=True, priority_beta=0.6, priority_eps=1e-6)
        learner = DQNLearner(model, params=params, replay=rb, state=state.array, control=control, config=cfg, seed=1)
        assert learner.distributional and learner.noisy
        learner.join()
        learner.warmup()  # on the zeroed batch: sets no priority
        assert rb.max_priority == 1.0
        eps_before = learner.online.head.advantage.weight_epsilon.clone()
        info = learner.update()
        assert info is not None and np.isfinite(info.loss) and info.version == 2
        idx = learner._np_batch.index
        w = learner._np_batch.weight
        assert w.max() == 1.0 and (w > 0).all()
        # Each sampled transition now has priority = its C51 loss + eps, not the entry priority 1.
        pri = np.array([rb.priority(int(i)) for i in idx])
        assert (np.abs(pri - 1.0) > 1e-3).all() and (pri > 0).all()
        assert not torch.equal(eps_before, learner.online.head.advantage.weight_epsilon)  # new noise
    with pytest.raises(ValueError, match="prioritized ReplayBuffer"):
        with rtcore.ReplayBuffer(100, (36, 36), frame_stack=2) as plain, rtcore.ParamStore(numel, buffers=3) as p2, \
                SharedArray((STATE_ROWS, numel), "float32") as s2:
            DQNLearner(model, params=p2, replay=plain, state=s2.array, control=np.zeros(Control.COUNT, np.int64),
                       config=cfg)


@pytest.mark.timeout(300)
def test_rainbow_runs_in_the_delay_simulation():
    from rtcore.agent.delay_sim import simulate_delay

    cfg = RunConfig(env="gb/TestRom", agent="rainbow", model="nature:k=0.25,hidden=16", frame_stack=2,
                    replay_capacity=1000, learning_starts=24, batch_size=8, target_update=10, seed=3)
    r = simulate_delay(cfg, delay=3, steps=60)
    assert r.steps == 60 and r.updates >= 30 and np.isfinite(r.last_loss)
    assert r.model == "nature:k=0.25,dueling=1,hidden=16,noisy=1,atoms=51,vmin=0,vmax=200"
    seq = simulate_delay(cfg, delay=2, steps=40, sequential=True)
    assert seq.updates >= 10


@pytest.mark.timeout(300)
def test_rainbow_runs_realtime(tmp_path):
    cmd = [sys.executable, "-m", "rtcore", "run", "--run-dir", str(tmp_path / "run"), "--json", "--no-tensorboard",
           "--no-plots", "--env", "gb/TestRom", "--model", "nature:k=0.25,hidden=32", "--frame-stack", "2",
           "--replay-capacity", "3000", "--latency-iters", "5", "--worker-headroom", "1.0", "--seconds", "6",
           "--learners", "1", "--learning-starts", "64", "--batch-size", "8", "--target-update", "5",
           "--agent", "rainbow"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=280,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    assert s["model"] == "nature:k=0.25,dueling=1,hidden=32,noisy=1,atoms=51,vmin=0,vmax=200"
    assert s["env_steps"] > 0 and s["learner_updates"] >= 1 and s["param_version"] == 1 + s["learner_updates"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["agent"] == "rainbow"
