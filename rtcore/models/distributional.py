"""Distributional (C51) value heads and the categorical projection (Bellemare et al. 2017).

A C51 head outputs, for every action, a probability distribution over ``atoms`` fixed returns
``z_i = v_min + i * (v_max - v_min) / (atoms - 1)``; ``forward`` returns the expected return
``Q(s, a) = sum_i z_i p_i(s, a)``, so inference workers and every other Q-value user stay unchanged,
and ``log_dist`` the log-probabilities ``[B, actions, atoms]`` the loss needs.

The target of a transition is the next state's distribution (of the action chosen by the online
network when double) moved to ``reward + discount * z`` and projected back onto the support:
:func:`project_distribution`. The loss is the cross-entropy ``-sum_i m_i log p_i(s, a)``; it is also the
prioritized replay's priority (as in Rainbow and the authors' code).

The authors' settings (CERC-AAI/realtime_rl ``model/agents.py``): 51 atoms on ``[0, 200]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rtcore.models.noisy import linear_layer

__all__ = [
    "C51_ATOMS", "C51_V_MIN", "C51_V_MAX", "DistributionalHead", "make_support", "project_distribution",
    "categorical_loss",
]

C51_ATOMS = 51
C51_V_MIN = 0.0
C51_V_MAX = 200.0


def make_support(atoms: int, v_min: float, v_max: float) -> torch.Tensor:
    """The ``atoms`` returns ``v_min .. v_max``, evenly spaced (float32)."""
    if atoms < 2:
        raise ValueError(f"a distributional head needs at least 2 atoms, got {atoms}")
    if not v_min < v_max:
        raise ValueError(f"v_min must be below v_max, got [{v_min}, {v_max}]")
    return torch.linspace(float(v_min), float(v_max), atoms, dtype=torch.float32)


def project_distribution(next_probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
                         support: torch.Tensor) -> torch.Tensor:
    """Projects ``reward + discount * z`` with probabilities ``next_probs`` onto ``support``.

    ``next_probs`` is ``[B, atoms]`` (rows sum to 1), ``reward`` and ``discount`` are ``[B]``
    (``discount`` = gamma^k, 0 after a termination). Each shifted atom ``Tz_j``, clamped to
    ``[v_min, v_max]``, sits at fractional index ``b = (Tz_j - v_min) / dz`` and gives ``p_j (u - b)``
    to atom ``l = floor(b)`` and ``p_j (b - l)`` to atom ``u = ceil(b)``; when ``b`` is an integer
    (``l == u``) the whole ``p_j`` goes to that atom (the authors' code, like several others, drops it
    there). Returns ``[B, atoms]`` rows summing to 1.
    """
    atoms = support.numel()
    v_min, v_max = float(support[0]), float(support[-1])
    dz = (v_max - v_min) / (atoms - 1)
    tz = (reward.unsqueeze(1) + discount.unsqueeze(1) * support.unsqueeze(0)).clamp(v_min, v_max)
    b = (tz - v_min) / dz
    lower = b.floor().long().clamp(0, atoms - 1)
    upper = b.ceil().long().clamp(0, atoms - 1)
    w_upper = b - lower.to(b.dtype)
    w_lower = 1.0 - w_upper  # = upper - b when l < u, 1 when l == u (then w_upper = 0)
    out = torch.zeros_like(next_probs)
    out.scatter_add_(1, lower, next_probs * w_lower)
    out.scatter_add_(1, upper, next_probs * w_upper)
    return out


def categorical_loss(log_probs_taken: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Per-transition cross-entropy ``-sum_i m_i log p_i``, ``[B]``."""
    return -(target_probs * log_probs_taken).sum(dim=1)


class DistributionalHead(nn.Module):
    """features -> hidden (ReLU) -> ``actions x atoms`` logits, optionally dueling and/or noisy.

    Dueling combines per atom: ``logits = V + A - mean_a(A)`` before the softmax (Rainbow, and the
    authors' ``RainbowImpalaCNN``)."""

    __constants__ = ["dueling"]  # a TorchScript constant: the branch not taken is never compiled

    def __init__(self, in_features: int, hidden: int, n_actions: int, dueling: bool, noisy: bool, atoms: int,
                 v_min: float, v_max: float) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.atoms = atoms
        self.dueling = dueling
        self.register_buffer("support", make_support(atoms, v_min, v_max))
        self.advantage_fc = linear_layer(in_features, hidden, noisy)
        self.advantage = linear_layer(hidden, n_actions * atoms, noisy)
        if dueling:
            self.value_fc = linear_layer(in_features, hidden, noisy)
            self.value = linear_layer(hidden, atoms, noisy)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        a = self.advantage(F.relu(self.advantage_fc(x))).view(-1, self.n_actions, self.atoms)
        if self.dueling:
            v = self.value(F.relu(self.value_fc(x))).view(-1, 1, self.atoms)
            return v + a - a.mean(dim=1, keepdim=True)
        return a

    @torch.jit.export
    def log_dist(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, actions, atoms]``."""
        return F.log_softmax(self.logits(x), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.softmax(self.logits(x), dim=2) * self.support).sum(dim=2)
