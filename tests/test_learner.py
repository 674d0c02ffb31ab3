"""DQN learners: the loss, the shared Adam, round-robin turns, and learning on a small env."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rtcore.agent.dqn import SharedAdam, dqn_loss
from rtcore.agent.telemetry import Control
from rtcore.shared.params import bind_flat


class TableQ(nn.Module):
    """Q(s, a) = W[s, a] for one-hot-ish integer observations: losses are computable by hand."""

    def __init__(self, n_states: int, n_actions: int, values: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(values.clone() if values is not None else torch.zeros(n_states, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.w[obs.reshape(obs.shape[0], -1)[:, 0].long()]


def test_dqn_loss_matches_the_bellman_target_by_hand():
    q = torch.tensor([[1.0, 2.0], [0.0, 0.5], [3.0, -1.0]])
    qt = torch.tensor([[0.0, 0.0], [4.0, 1.0], [2.0, 6.0]])
    online, target = TableQ(3, 2, q), TableQ(3, 2, qt)
    obs = torch.tensor([[0], [1]])
    next_obs = torch.tensor([[1], [2]])
    action = torch.tensor([1, 0])
    reward = torch.tensor([1.0, -1.0])
    discount = torch.tensor([0.9, 0.0])  # the second transition terminated: no bootstrap
    # plain DQN: max over the target net: y = [1 + 0.9 * 4, -1]; q(s,a) = [2, 0]
    loss, q_taken = dqn_loss(online, target, obs, action, reward, discount, next_obs, double_dqn=False)
    y = torch.tensor([1 + 0.9 * 4.0, -1.0])
    expected = nn.functional.smooth_l1_loss(torch.tensor([2.0, 0.0]), y)
    assert q_taken.tolist() == [2.0, 0.0]
    assert loss.item() == pytest.approx(expected.item())
    # double DQN: the online net picks argmax at s'=1 -> action 1, valued by the target net: 1.0
    loss_d, _ = dqn_loss(online, target, obs, action, reward, discount, next_obs, double_dqn=True)
    y_d = torch.tensor([1 + 0.9 * 1.0, -1.0])
    assert loss_d.item() == pytest.approx(nn.functional.smooth_l1_loss(torch.tensor([2.0, 0.0]), y_d).item())
    # gradient flows only into the online net's taken entries
    loss_d.backward()
    g = online.w.grad
    assert g[0, 0] == 0 and g[2].abs().sum() == 0 and g[0, 1] != 0 and g[1, 0] != 0


def test_shared_adam_is_torch_adam(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    reference = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1.5e-4)
    flat = bind_flat(model)
    moments = np.zeros((2, flat.numel()), np.float32)
    control = np.zeros(Control.COUNT, np.int64)
    adam = SharedAdam(moments, control, lr=1e-2, eps=1.5e-4)
    for _ in range(20):
        x = torch.from_numpy(rng.normal(size=(8, 5)).astype(np.float32))
        for m in (model, reference):
            m.zero_grad()
            m(x).pow(2).mean().backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        with torch.no_grad():
            adam.step(flat, grad)
        opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert control[Control.OPT_STEP] == 20
    # the moments live in the caller's array (shared memory in a run), not in private tensors
    assert np.abs(moments).sum() > 0


def test_bind_flat_makes_parameters_views_of_one_tensor():
    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    flat = bind_flat(model)
    assert flat.numel() == 8
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), b)
    flat.zero_()
    assert all(p.abs().sum() == 0 for p in model.parameters())


def test_shared_adam_rejects_a_wrong_moments_array():
    with pytest.raises(ValueError, match=r"expected \(2, numel\) float32"):
        SharedAdam(np.zeros((3, 4), np.float32), np.zeros(8, np.int64), lr=1e-3)


# ---------------------------------------------------------------------- with the shared objects
class MLP(nn.Module):
    def __init__(self, n_in: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.reshape(obs.shape[0], -1).float())


def make_learner(model, replay, *, turnstile=None, learner=0, shared=None, **cfg):
    from rtcore import ParamStore
    from rtcore.agent.dqn import DQNLearner, LearnerConfig

    if shared is None:
        flat = bind_flat(model).numpy().copy()
        store = ParamStore(flat.size, buffers=8)
        store.publish(flat)
        from rtcore.agent.optim import STATE_ROWS, init_learner_state

        state = init_learner_state(np.zeros((STATE_ROWS, flat.size), np.float32), flat)
        shared = {"params": store, "state": state, "control": np.zeros(Control.COUNT, np.int64)}
    lrn = DQNLearner(model, params=shared["params"], replay=replay, state=shared["state"],
                     control=shared["control"], config=LearnerConfig(**cfg),
                     turnstile=turnstile, learner=learner, seed=learner)
    return lrn, shared


def greedy_return(model, seed: int, episodes: int = 5) -> float:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            with torch.no_grad():
                a = int(model(torch.from_numpy(obs).unsqueeze(0)).argmax())
            obs, r, term, trunc, _ = env.step(a)
            total += r
            done = term or trunc
    env.close()
    return total / episodes


def test_dqn_learns_cartpole_with_the_run_learner(one_torch_thread):
    """The learner code a run uses (shared Adam, ParamStore versions, n-step replay) learns CartPole.

    Seeded: 3,500 updates take the greedy return from ~10 (untrained) to well above a random policy's ~22.
    """
    import gymnasium as gym

    from rtcore import ReplayBuffer

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MLP(4, 2)
    with ReplayBuffer(50_000, (4,), obs_dtype="float32", n_step=3, gamma=0.99) as replay:
        learner, shared = make_learner(model, replay, batch_size=64, lr=1e-3, adam_eps=1e-8, target_update=250,
                                       double_dqn=True, max_grad_norm=10.0)
        untrained = greedy_return(model, seed=100)
        try:
            learner.join()
            actor = MLP(4, 2)
            random_return = greedy_return(lambda x: torch.from_numpy(rng.normal(size=(1, 2))), seed=100)
            env = gym.make("CartPole-v1")
            obs, _ = env.reset(seed=0)
            steps = 4_000
            for t in range(steps):
                eps = max(0.05, 1.0 - t / 2500)
                if rng.random() < eps:
                    a = int(rng.integers(2))
                else:
                    with shared["params"].read() as (_, view):
                        bind_flat(actor, view)
                    with torch.no_grad():
                        a = int(actor(torch.from_numpy(obs).unsqueeze(0)).argmax())
                nxt, r, term, trunc, _ = env.step(a)
                end = term or trunc
                replay.add(0, obs, a, r, term, trunc, next_obs=nxt if end else None)
                obs = env.reset()[0] if end else nxt
                if t >= 500:
                    learner.update()
            env.close()
            versions = shared["params"].version
            with shared["params"].read() as (_, view):
                bind_flat(actor, view)
            learned = greedy_return(actor, seed=100)
        finally:
            shared["params"].close()
    assert versions == 1 + (steps - 500)  # every update published exactly one version
    assert shared["control"][Control.UPDATES] == steps - 500
    assert shared["control"][Control.TARGET_VERSION] == (steps - 500) // 250
    assert random_return < 40 and untrained < 40
    assert learned >= 100, (f"greedy return after learning {learned:.1f} (untrained: {untrained:.1f}, "
                            f"random policy: {random_return:.1f})")


@pytest.mark.timeout(120)
def test_two_learners_apply_round_robin_with_one_adam(one_torch_thread, rng):
    """M = 2 learners: updates alternate strictly, each is at most one version stale, one Adam state."""
    import threading

    from rtcore import ParamStore, ReplayBuffer, Turnstile

    torch.manual_seed(0)
    with ReplayBuffer(2000, (4,), obs_dtype="float32", n_step=3) as replay, Turnstile(2) as turnstile:
        for i in range(1000):
            end = i % 50 == 49
            obs = rng.normal(size=4).astype(np.float32)
            replay.add(0, obs, int(rng.integers(2)), float(rng.normal()), end, False, next_obs=obs if end else None)
        lrn0, shared = make_learner(MLP(4, 2), replay, turnstile=turnstile, learner=0, target_update=7)
        handles = [ParamStore.attach(shared["params"].name), ReplayBuffer.attach(replay.name),
                   Turnstile.attach(turnstile.name)]
        try:
            shared1 = {**shared, "params": handles[0]}
            lrn1, _ = make_learner(MLP(4, 2), handles[1], turnstile=handles[2], learner=1, shared=shared1,
                                   target_update=7)
            log: list[tuple[int, int, int]] = []  # (learner, version, snapshot version)
            errors: list[BaseException] = []
            start = threading.Barrier(2, timeout=60)

            def train(lrn, j: int) -> None:
                try:
                    start.wait()
                    assert lrn.join()
                    for _ in range(25):
                        info = lrn.update()
                        log.append((j, info.version, info.snapshot_version))
                    lrn.leave()
                except BaseException as exc:  # surfaced below
                    errors.append(exc)
                    lrn.leave()

            threads = [threading.Thread(target=train, args=(lrn, j)) for j, lrn in enumerate((lrn0, lrn1))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(100)
            assert not errors, errors
        finally:
            for h in handles:
                h.close()
            shared["params"].close()
    log.sort(key=lambda e: e[1])
    assert [v for _, v, _ in log] == list(range(2, 52))  # every update published exactly one new version
    # round robin: while both are live (from the later one's first update to the earlier one's last),
    # learners alternate strictly
    order = [j for j, _, _ in log]
    start = max(order.index(0), order.index(1))
    end = min(len(order) - 1 - order[::-1].index(0), len(order) - 1 - order[::-1].index(1))
    both = order[start:end + 1]
    assert len(both) >= 20, order  # (the first to join may update alone for a moment)
    assert all(a != b for a, b in zip(both, both[1:])), order
    # each gradient was computed at most M - 1 = 1 version before the one it was applied to
    assert max(v - 1 - snap for _, v, snap in log) <= 1
    assert max(v - 1 - snap for _, v, snap in log) == 1  # and the asynchrony is real
    assert shared["control"][Control.OPT_STEP] == 50 and shared["control"][Control.UPDATES] == 50
    assert shared["control"][Control.TARGET_VERSION] == 50 // 7


def _small_replay(rng):
    from rtcore import ReplayBuffer

    replay = ReplayBuffer(2000, (4,), obs_dtype="float32", n_step=3)
    for i in range(500):
        end = i % 50 == 49
        obs = rng.normal(size=4).astype(np.float32)
        replay.add(0, obs, int(rng.integers(2)), float(rng.normal()), end, False, next_obs=obs if end else None)
    return replay


def test_a_skipped_publish_loses_no_update(rng, one_torch_thread):
    """Every spare buffer pinned by a reader: the learner's publish is skipped, the update stays in the
    shared master copy, and the next publish carries both."""
    from rtcore import ParamStore
    from rtcore.agent.dqn import DQNLearner, LearnerConfig

    torch.manual_seed(0)
    with _small_replay(rng) as replay:
        model = MLP(4, 2)
        flat = bind_flat(model).detach().numpy().copy()
        from rtcore.agent.optim import STATE_ROWS, init_learner_state

        state = init_learner_state(np.zeros((STATE_ROWS, flat.size), np.float32), flat)
        control = np.zeros(Control.COUNT, np.int64)
        with ParamStore(flat.size, buffers=2) as store, ParamStore.attach(store.name) as other:
            store.publish(flat)
            lrn = DQNLearner(model, params=store, replay=replay, state=state, control=control,
                             config=LearnerConfig(batch_size=16), seed=0)
            other.pin()  # a reader holds version 1 for a long pass
            assert lrn.update().version == 2
            info = lrn.update()  # version 3 would need a third buffer
            assert info.version == 2 and store.version == 2 and store.stats()["skipped_no_buffer"] == 1
            other.unpin()
            assert control[Control.UPDATES] == 2  # the update was applied to the master all the same
            from rtcore.agent.optim import bank

            before = bank(state, control[Control.OPT_STEP])[0].copy()
            info = lrn.update()
            assert info.version == 3
            master = bank(state, control[Control.OPT_STEP])[0]
            with store.read() as (_, view):
                np.testing.assert_array_equal(view, master)  # the published version is the master
            assert not np.array_equal(before, master)


def test_replicas_of_the_learner_state_stay_in_step(rng, one_torch_thread):
    """Learners on several devices keep one replica of the state each, all updated in every turn (here
    two replicas on the CPU: the same code path as two GPUs)."""
    from rtcore import ParamStore
    from rtcore.agent.dqn import DQNLearner, LearnerConfig

    torch.manual_seed(0)
    with _small_replay(rng) as replay:
        model = MLP(4, 2)
        flat = bind_flat(model).detach().numpy().copy()
        from rtcore.agent.optim import STATE_ROWS, TARGET, bank, init_learner_state

        replicas = [init_learner_state(np.zeros((STATE_ROWS, flat.size), np.float32), flat) for _ in range(2)]
        control = np.zeros(Control.COUNT, np.int64)
        with ParamStore(flat.size, buffers=3) as store:
            store.publish(flat)
            lrn = DQNLearner(model, params=store, replay=replay, state=replicas, control=control,
                             config=LearnerConfig(batch_size=16, target_update=3), seed=0)
            for _ in range(7):
                lrn.update()
            np.testing.assert_array_equal(replicas[0], replicas[1])  # master, moments and target alike
            assert not np.array_equal(bank(replicas[0], 7)[0], flat) and not np.array_equal(replicas[0][TARGET], flat)
            assert control[Control.OPT_STEP] == 7  # one Adam step per update, not one per replica


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.timeout(300)
def test_gpu_learners_share_state_on_the_gpu_and_take_turns():
    """Two learner processes on one GPU: master, moments and target live on the GPU (CUDA IPC), versions
    in a device mirror; round-robin turns keep the staleness at M - 1."""
    from rtcore.agent.learner import measure_updates_per_second

    r = measure_updates_per_second("impala:k=1", 2, seconds=3.0, device="cuda")
    assert r["updates"] > 10, r
    assert r["staleness"] <= 1.0 + 1e-9, r


@cuda
def test_gpu_learner_matches_the_cpu_learner(rng):
    """The same updates on the GPU-resident state as on the CPU (to float tolerance)."""
    from rtcore import ParamStore
    from rtcore.agent.dqn import DQNLearner, LearnerConfig, new_learner_state
    from rtcore.shared.params import device_mirror

    out = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        with _small_replay(np.random.default_rng(0)) as replay:
            model = MLP(4, 2)
            flat = bind_flat(model).detach().numpy().copy()
            control = np.zeros(Control.COUNT, np.int64)
            with ParamStore(flat.size, buffers=3) as store:
                store.publish(flat)
                state = new_learner_state(flat, device)
                mirror = device_mirror(store, device) if device == "cuda" else None
                lrn = DQNLearner(model, params=store, replay=replay, state=state, control=control,
                                 config=LearnerConfig(batch_size=16, target_update=3), seed=0, device=device,
                                 mirrors=mirror)
                for _ in range(5):
                    lrn.update()
                out[device] = state.cpu().numpy().copy()
    np.testing.assert_allclose(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-5)
