"""Rainbow model pieces against hand-worked cases: the C51 projection, noisy linear layers, the
distributional head, and model specs with noisy=1 / atoms=51."""

from __future__ import annotations

import math

import pytest
import torch

from rtcore.models import build_model, count_parameters, parse_model_spec
from rtcore.models.distributional import (
    C51_ATOMS,
    C51_V_MAX,
    C51_V_MIN,
    DistributionalHead,
    categorical_loss,
    make_support,
    project_distribution,
)
from rtcore.models.noisy import NoisyLinear, noisy_parameters, reset_noise


def t(x):
    return torch.tensor(x, dtype=torch.float32)


# --- the categorical projection, worked by hand on the support 0, 1, 2, 3, 4 ------------------------


@pytest.mark.parametrize(
    "probs,reward,discount,want",
    [
        # Tz = 0.5 + z: atom 1 (z=1) lands at 1.5, half to atom 1 and half to atom 2.
        ([0, 1, 0, 0, 0], 0.5, 1.0, [0, 0.5, 0.5, 0, 0]),
        # A termination (discount 0): every atom lands on r = 2 exactly; b is an integer (l == u) and
        # the whole mass goes to atom 2 (not dropped).
        ([0.2, 0.2, 0.2, 0.2, 0.2], 2.0, 0.0, [0, 0, 1, 0, 0]),
        # Clamping: Tz = 3 + z = 3..7 is clamped to [0, 4]: atoms 1..4 all land on 4.
        ([0.2, 0.2, 0.2, 0.2, 0.2], 3.0, 1.0, [0, 0, 0, 0.2, 0.8]),
        # Tz = 1 + 0.5 z = 1, 1.5, 2, 2.5, 3:
        #   atom 1 gets 0.1 + 0.2/2 = 0.2; atom 2 gets 0.2/2 + 0.3 + 0.4/2 = 0.6; atom 3 gets 0.4/2 = 0.2.
        ([0.1, 0.2, 0.3, 0.4, 0.0], 1.0, 0.5, [0, 0.2, 0.6, 0.2, 0]),
        # Below the support: Tz = -10 + z is clamped to 0.
        ([0.5, 0, 0, 0, 0.5], -10.0, 1.0, [1, 0, 0, 0, 0]),
    ],
)
def test_projection_hand_worked(probs, reward, discount, want):
    support = make_support(5, 0.0, 4.0)
    got = project_distribution(t([probs]), t([reward]), t([discount]), support)
    torch.testing.assert_close(got, t([want]), atol=1e-6, rtol=0)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)


def test_projection_on_a_negative_support_and_batched_rows():
    support = make_support(3, -1.0, 1.0)  # z = -1, 0, 1, dz = 1
    # Row 0: Tz = -0.25 + 0.5 * 1 = 0.25 -> b = 1.25: 0.75 to atom 1 (z=0), 0.25 to atom 2 (z=1).
    # Row 1: Tz = 0.5 * (-1, 0, 1) = -0.5, 0, 0.5 with probs 0.5, 0, 0.5: halves to atoms 0/1 and 1/2.
    got = project_distribution(t([[0, 0, 1], [0.5, 0, 0.5]]), t([-0.25, 0.0]), t([0.5, 0.5]), support)
    torch.testing.assert_close(got, t([[0, 0.75, 0.25], [0.25, 0.5, 0.25]]), atol=1e-6, rtol=0)


def test_projection_keeps_the_mean_inside_the_support(rng):
    support = make_support(C51_ATOMS, C51_V_MIN, C51_V_MAX)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(64, C51_ATOMS))).float(), dim=1)
    reward = torch.from_numpy(rng.uniform(0, 5, 64)).float()
    discount = torch.from_numpy(rng.choice([0.0, 0.99**3], 64)).float()
    got = project_distribution(probs, reward, discount, support)
    torch.testing.assert_close(got.sum(1), torch.ones(64), atol=1e-5, rtol=0)
    # Linear interpolation preserves the mean of the (unclamped) shifted distribution.
    mean_in = reward + discount * (probs * support).sum(1)
    torch.testing.assert_close((got * support).sum(1), mean_in, atol=1e-3, rtol=1e-5)


def test_categorical_loss_is_cross_entropy():
    logp = torch.log(t([[0.25, 0.5, 0.25]]))
    m = t([[0.0, 1.0, 0.0]])
    assert float(categorical_loss(logp, m)[0]) == pytest.approx(math.log(2))


def test_support_checks():
    with pytest.raises(ValueError, match="at least 2 atoms"):
        make_support(1, 0, 1)
    with pytest.raises(ValueError, match="v_min must be below v_max"):
        make_support(5, 1, 1)


# --- noisy linear layers ------------------------------------------------------------------------


def test_noisy_linear_forward_hand_worked():
    layer = NoisyLinear(2, 1, sigma0=0.5)
    with torch.no_grad():
        layer.weight_mu.copy_(t([[1.0, 2.0]]))
        layer.bias_mu.copy_(t([3.0]))
        layer.weight_sigma.copy_(t([[0.5, 0.25]]))
        layer.bias_sigma.copy_(t([0.1]))
        # eps_in = f(1, -4) = (1, -2), eps_out = f(9) = 3: W_eps = 3 * (1, -2) = (3, -6), b_eps = 3.
        layer.weight_epsilon.copy_(t([[3.0, -6.0]]))
        layer.bias_epsilon.copy_(t([3.0]))
    # W = (1 + 0.5*3, 2 - 0.25*6) = (2.5, 0.5); b = 3 + 0.1*3 = 3.3; y = 2.5 + 0.5 + 3.3 = 6.3.
    assert float(layer(t([[1.0, 1.0]])).detach()[0, 0]) == pytest.approx(6.3, abs=1e-6)


def test_noisy_linear_init_and_factorised_noise():
    layer = NoisyLinear(16, 4, sigma0=0.5)
    assert torch.all(layer.weight_sigma == 0.5 / 4.0) and torch.all(layer.bias_sigma == 0.25)
    assert layer.weight_mu.abs().max() <= 0.25 and layer.bias_mu.abs().max() <= 0.25
    assert sum(p.numel() for p in layer.parameters()) == noisy_parameters(16, 4) == 2 * (16 * 4 + 4)
    assert {n for n, _ in layer.named_buffers()} == {"weight_epsilon", "bias_epsilon"}  # noise is not a parameter
    torch.manual_seed(7)
    layer.reset_noise()
    torch.manual_seed(7)
    e_in, e_out = torch.randn(16), torch.randn(4)
    f_in, f_out = e_in.sign() * e_in.abs().sqrt(), e_out.sign() * e_out.abs().sqrt()
    torch.testing.assert_close(layer.weight_epsilon, torch.outer(f_out, f_in))
    torch.testing.assert_close(layer.bias_epsilon, f_out)
    before = layer.weight_epsilon.clone()
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), NoisyLinear(4, 2))
    assert reset_noise(model) == 2
    assert not torch.equal(before, layer.weight_epsilon)
    with pytest.raises(ValueError, match="positive sizes"):
        NoisyLinear(0, 3)


def test_noisy_layers_train_sigma():
    layer = NoisyLinear(3, 2)
    layer(torch.ones(4, 3)).sum().backward()
    assert layer.weight_sigma.grad is not None and layer.weight_sigma.grad.abs().sum() > 0


# --- the distributional head and the specs --------------------------------------------------------


def test_distributional_head_q_is_the_mean_and_dueling_combines_per_atom():
    torch.manual_seed(0)
    head = DistributionalHead(8, 16, 3, dueling=True, noisy=False, atoms=5, v_min=-2.0, v_max=2.0)
    x = torch.randn(4, 8)
    logp = head.log_dist(x)
    assert logp.shape == (4, 3, 5)
    torch.testing.assert_close(logp.exp().sum(2), torch.ones(4, 3))
    torch.testing.assert_close(head(x), (logp.exp() * t([-2, -1, 0, 1, 2])).sum(2))
    a = head.advantage(torch.relu(head.advantage_fc(x))).view(4, 3, 5)
    v = head.value(torch.relu(head.value_fc(x))).view(4, 1, 5)
    torch.testing.assert_close(logp, torch.log_softmax(v + a - a.mean(1, keepdim=True), 2))


@pytest.mark.parametrize("spec", ["nature:noisy=1", "impala:k=1,dueling=1,noisy=1,atoms=51,vmin=0,vmax=200",
                                  "nature:k=1,atoms=11,vmin=-10,vmax=10"])
def test_rainbow_specs_build_count_and_script(spec):
    s = parse_model_spec(spec)
    assert parse_model_spec(str(s)) == s
    m = build_model(spec, 4, 5)
    assert sum(p.numel() for p in m.parameters()) == count_parameters(spec, 4, 5)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    q = m(x)
    assert q.shape == (2, 5)
    torch.testing.assert_close(torch.jit.script(m)(x), q)
    if s.atoms > 1:
        assert m.log_dist(x).shape == (2, 5, s.atoms)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("nature:atoms=0", "atoms=0 must be 1"),
        ("nature:atoms=51,vmin=5,vmax=1", "vmin < vmax"),
        ("nature:atoms=x", "not an integer"),
        ("nature:noisy=maybe", "not a boolean"),
    ],
)
def test_bad_rainbow_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_model_spec(spec)


def test_c51_defaults_are_the_authors():
    assert (C51_ATOMS, C51_V_MIN, C51_V_MAX) == (51, 0.0, 200.0)
