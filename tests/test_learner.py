"""DQN learners: the loss, the shared Adam, round-robin turns, and learning on a small env."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rtcore.learner import SharedAdam, bind_flat, dqn_loss
from rtcore.metrics import Control


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
