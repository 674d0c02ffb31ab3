"""Action history as a model input (``--action-history K``): the delay-aware observation.

Under delay the agent cannot see the actions already on their way, so it overshoots; rtgym answers this
by putting the recent actions into the observation. :class:`ActionHistoryNet` wraps any rtcore
Q-network built with ``history_features`` extra inputs and takes ``forward(obs, hist)``:

* ``hist`` is int ``(B, K + 1)``: the actions applied before the newest frame of ``obs`` (the ones that
  led to its last K frames, oldest first), then the *pending* slot (a posted action already on its way
  when the frame was read), :data:`NO_ACTION` (-1) where there is none (before the episode start, no
  pending post). The replay buffer gathers it at sample time (:meth:`rtcore.ReplayBuffer.sample`) and
  the inference workers read it with the frames (:meth:`rtcore.ObsBoard.read`), by one definition.
* Each slot is one-hot over ``n_actions + 1`` tokens (the last one is "none"); the ``(K + 1) *
  (n_actions + 1)`` features join the frame features after the conv torso, before the head (conv
  nets), or the flattened input (``mlp``).

Models without history are not wrapped: their ``forward(obs)`` is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ActionHistoryNet", "NO_ACTION", "MAX_ACTION_HISTORY", "history_features", "q_head", "example_history"]

NO_ACTION = -1
"""The "none" token of an action history (the same value as :data:`rtcore.shared.replay.NO_ACTION`)."""
MAX_ACTION_HISTORY = 1024


def history_features(action_history: int, n_actions: int) -> int:
    """Inputs an action history of K adds: ``(K + 1) * (n_actions + 1)`` (0 when K is 0)."""
    return (action_history + 1) * (n_actions + 1) if action_history else 0


class ActionHistoryNet(nn.Module):
    """``forward(obs, hist)``: a Q-network (built with ``history_features``) fed the one-hot action history.

    Attributes (surviving TorchScript): ``action_history`` (K), ``spec``, ``in_frames``, ``n_actions``,
    ``obs_shape``, ``frame_size`` (those of ``base``). ``hist`` may be any integer dtype; an action
    outside ``[-1, n_actions)`` is an error (one_hot refuses it).
    """

    def __init__(self, base: nn.Module, action_history: int, n_actions: int) -> None:
        super().__init__()
        self.base = base
        self.action_history = int(action_history)
        self.slots = int(action_history) + 1
        self.tokens = int(n_actions) + 1
        self.spec = str(base.spec)
        self.in_frames = int(base.in_frames)
        self.n_actions = int(n_actions)
        self.frame_size = tuple(base.frame_size)
        self.obs_shape = tuple(base.obs_shape)

    def encode(self, hist: torch.Tensor) -> torch.Tensor:
        """(B, K + 1) actions -> (B, (K + 1) * (n_actions + 1)) float32 one-hot; NO_ACTION -> the last token."""
        h = hist.reshape(-1, self.slots).to(torch.int64)
        h = torch.where(h < 0, h + self.tokens, h)  # NO_ACTION (-1) -> the "none" token, n_actions
        return F.one_hot(h, self.tokens).flatten(1).to(torch.float32)

    def forward(self, obs: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        return self.base.forward_with(obs, self.encode(hist))

    def log_dist(self, obs: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """C51 models only (eager): log-probabilities (B, n_actions, atoms)."""
        return self.base.log_dist_with(obs, self.encode(hist))


def q_head(model: nn.Module) -> nn.Module:
    """The Q-value head of an rtcore model, wrapped in an :class:`ActionHistoryNet` or not (None: no ``head``)."""
    return getattr(model.base if isinstance(model, ActionHistoryNet) else model, "head", None)


def example_history(model: nn.Module, batch: int = 1, *, device: str | torch.device = "cpu",
                    seed: int = 0) -> torch.Tensor:
    """A seeded batch of action histories ``(batch, K + 1)`` int64 for a model with history (some slots NO_ACTION)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(-1, int(model.n_actions), (batch, int(model.action_history) + 1), generator=g)
    return h.to(device)
