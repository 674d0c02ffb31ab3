"""Noisy linear layers (Fortunato et al. 2018, "Noisy Networks for Exploration"), factorised Gaussian.

    y = (mu_W + sigma_W * eps_W) x + mu_b + sigma_b * eps_b,   eps_W = f(eps_out) f(eps_in)^T, eps_b = f(eps_out)

with ``f(x) = sign(x) sqrt(|x|)`` of independent standard normals, ``mu`` initialised uniform in
``[-1/sqrt(in), 1/sqrt(in)]`` and ``sigma`` at ``sigma0 / sqrt(in)`` (weights) and ``sigma0 / sqrt(out)``
(biases), sigma0 = 0.5: the paper's factorised variant and the authors' Rainbow (CERC-AAI/realtime_rl,
``model/agents.py``). Noise is a buffer, not a parameter: it never travels through the ParamStore, and
each process draws its own with :meth:`NoisyLinear.reset_noise` (learners after every update, as the
authors; inference workers when they load a new parameter version). As in the authors' code the noise
is applied in train and eval mode alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NoisyLinear", "linear_layer", "noise_resetter", "reset_noise", "noisy_parameters", "scaled_noise"]


def scaled_noise(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``f(x) = sign(x) * sqrt(|x|)`` of ``size`` standard normals."""
    x = torch.randn(size, generator=generator)
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """A linear layer with learnt factorised Gaussian noise on its weights and biases."""

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"NoisyLinear needs positive sizes, got {in_features} -> {out_features}")
        if not (sigma0 >= 0 and math.isfinite(sigma0)):
            raise ValueError(f"sigma0 must be a finite number >= 0, got {sigma0}")
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = float(sigma0)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("weight_epsilon", torch.zeros(out_features, in_features))
        self.register_buffer("bias_epsilon", torch.zeros(out_features))
        self.reset_parameters()
        self.reset_noise()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.sigma0 / math.sqrt(self.in_features))
            self.bias_sigma.fill_(self.sigma0 / math.sqrt(self.out_features))

    @torch.jit.export
    def reset_noise(self) -> None:
        """Draws new factorised noise (in place, on the layer's device)."""
        eps_in = torch.randn(self.in_features, device=self.weight_epsilon.device)
        eps_out = torch.randn(self.out_features, device=self.weight_epsilon.device)
        eps_in = eps_in.sign() * eps_in.abs().sqrt()
        eps_out = eps_out.sign() * eps_out.abs().sqrt()
        self.weight_epsilon.copy_(torch.outer(eps_out, eps_in))
        self.bias_epsilon.copy_(eps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_mu + self.weight_sigma * self.weight_epsilon,
                        self.bias_mu + self.bias_sigma * self.bias_epsilon)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sigma0={self.sigma0}"


def linear_layer(in_features: int, out_features: int, noisy: bool) -> nn.Module:
    """``NoisyLinear`` (sigma0 = 0.5) when ``noisy``, else ``nn.Linear``."""
    return NoisyLinear(in_features, out_features) if noisy else nn.Linear(in_features, out_features)


def noisy_parameters(in_features: int, out_features: int) -> int:
    """Parameters of a :class:`NoisyLinear` (mu and sigma of every weight and bias)."""
    return 2 * (in_features * out_features + out_features)


def reset_noise(module: nn.Module) -> int:
    """Calls ``reset_noise`` on every :class:`NoisyLinear` in ``module``; returns how many it found.

    For an eager module; :func:`noise_resetter` also handles TorchScript modules."""
    n = 0
    for m in module.modules():
        if isinstance(m, NoisyLinear):
            m.reset_noise()
            n += 1
    return n


def noise_resetter(module: object):
    """A function that draws new noise in every noisy layer of ``module`` (eager or TorchScript), or
    None if it has none (or is a ``torch.export`` program, whose noise is frozen at export)."""
    mods = getattr(module, "modules", None)
    if mods is None:
        return None
    layers = [m for m in mods() if isinstance(m, NoisyLinear) or getattr(m, "original_name", "") == "NoisyLinear"]
    if not layers:
        return None

    def reset() -> None:
        with torch.no_grad():
            for m in layers:
                m.reset_noise()

    return reset
