"""Pieces shared by the model families: input scaling, Q-value heads, shape arithmetic."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rtcore.models.distributional import DistributionalHead
from rtcore.models.noisy import linear_layer

__all__ = ["LinearHead", "DuelingHead", "make_head", "head_parameters", "conv_out", "pool_out", "scale_frames"]
__all__ = ["LinearHead", "DuelingHead", "make_head", "head_parameters", "conv_out", "pool_out", "scale_frames",
           "image_geometry", "min_frame_side"]


def image_geometry(arch: str, in_frames: int, obs_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(input channels, H, W)`` of a conv net over ``in_frames`` stacked frames of ``obs_shape``
    (``(H, W)`` greyscale or ``(C, H, W)``): the stack's frames and channels become conv channels."""
    if len(obs_shape) == 2:
        return in_frames, int(obs_shape[0]), int(obs_shape[1])
    if len(obs_shape) == 3:
        return in_frames * int(obs_shape[0]), int(obs_shape[1]), int(obs_shape[2])
    raise ValueError(f"model {arch!r} needs image frames, (H, W) or (C, H, W); got observations of shape "
                     f"{tuple(obs_shape)}: use 'mlp' for vectors")


def min_frame_side(feature_hw, limit: int = 4096) -> int:
    """The smallest square frame side a network's ``feature_hw((side, side))`` accepts (for error messages)."""
    for side in range(1, limit):
        try:
            feature_hw((side, side))
            return side
        except ValueError:
            continue
    return limit


def scale_frames(obs: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (or floats on the same 0..255 scale) -> float32 in [0, 1]."""
    return obs.to(torch.float32) * (1.0 / 255.0)


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution (or pooling) along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int) -> int:
    return conv_out(size, kernel, stride)


class LinearHead(nn.Module):
    """features -> hidden (ReLU) -> one Q-value per action (noisy layers when ``noisy``)."""

    def __init__(self, in_features: int, hidden: int, n_actions: int, noisy: bool = False) -> None:
        super().__init__()
        self.fc = linear_layer(in_features, hidden, noisy)
        self.out = linear_layer(hidden, n_actions, noisy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc(x)))


class DuelingHead(nn.Module):
    """Dueling head (Wang et al. 2016): Q = V + A - mean(A), each stream with its own hidden layer."""

    def __init__(self, in_features: int, hidden: int, n_actions: int, noisy: bool = False) -> None:
        super().__init__()
        self.value_fc = linear_layer(in_features, hidden, noisy)
        self.value = linear_layer(hidden, 1, noisy)
        self.advantage_fc = linear_layer(in_features, hidden, noisy)
        self.advantage = linear_layer(hidden, n_actions, noisy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.value(F.relu(self.value_fc(x)))
        a = self.advantage(F.relu(self.advantage_fc(x)))
        return v + a - a.mean(dim=1, keepdim=True)


def make_head(in_features: int, hidden: int, n_actions: int, dueling: bool, noisy: bool = False, atoms: int = 1,
              v_min: float = 0.0, v_max: float = 200.0) -> nn.Module:
    """The Q-value head: linear or dueling, with noisy layers when ``noisy``, distributional (C51 over
    ``atoms`` returns in ``[v_min, v_max]``) when ``atoms > 1``. Every head's ``forward`` gives Q-values."""
    if atoms > 1:
        return DistributionalHead(in_features, hidden, n_actions, dueling, noisy, atoms, v_min, v_max)
    return (DuelingHead if dueling else LinearHead)(in_features, hidden, n_actions, noisy)


def head_parameters(in_features: int, hidden: int, n_actions: int, dueling: bool, noisy: bool = False,
                    atoms: int = 1) -> int:
    """Exact parameter count of :func:`make_head`'s module."""
    mult = 2 if noisy else 1  # a noisy layer has a mu and a sigma per weight and bias
    outs = n_actions * atoms
    stream = in_features * hidden + hidden
    if dueling:
        return mult * (2 * stream + (hidden * atoms + atoms) + (hidden * outs + outs))
    return mult * (stream + hidden * outs + outs)


class FeatureNet(nn.Module):
    """An rtcore model made of ``features(obs)`` (B, F) and a ``head``: Q-values, C51 log-probabilities, and
    both with ``extra`` features (an action history) beside the conv features. Subclasses define
    ``features`` and ``head``."""

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs))

    def log_dist(self, obs: torch.Tensor) -> torch.Tensor:
        """C51 models only (eager): log-probabilities (B, n_actions, atoms) of the returns on ``head.support``."""
        return self.head.log_dist(self.features(obs))

    def forward_with(self, obs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Q-values with ``extra`` features (B, history_features) beside the conv features (action history)."""
        return self.head(torch.cat([self.features(obs), extra], 1))

    def log_dist_with(self, obs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """:meth:`log_dist` with ``extra`` features, as :meth:`forward_with`."""
        return self.head.log_dist(torch.cat([self.features(obs), extra], 1))
