"""The paper's Impala CNN family (Espeholt et al. 2018, as scaled by Riemer et al. 2024).

Layout, following the released code of "Enabling Realtime Reinforcement Learning at Scale with
Staggered Asynchronous Inference" (the model family behind its 1M/10M/100M/1B table):

    frames (B, in_frames, 84, 84) uint8 -> /255
    conv stack x3 (deep: x6), each:  conv 3x3 stride 1, *no padding*  ->  max-pool 3x3 (stride 2 or 1)
                                      ->  2 residual blocks [relu, conv 3x3 pad 1, relu, conv 3x3 pad 1, +x]
    channels int(16k) in the first stack, int(32k) in every later one
    relu -> flatten -> fc(hidden=512) -> relu -> fc(n_actions)        (or a dueling head)

Pool strides: (2, 2, 2) for the 15-layer network (84 -> 7x7 features), (2, 1, 1, 1, 2, 1) for the
30-layer "deep" one (84 -> 8x8 features). Unlike the canonical Impala CNN (padding "same", pool padding 1)
the stack's first convolution and pool have no padding; that is what gives the table's counts: with one
84x84 input frame and 6 actions (the paper's Game Boy action set), k=1 -> 903,718 parameters,
k=7 -> 10,368,742, k=29 -> 104,682,918, k=98 -> 1,008,092,742.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rtcore.models.layers import (FeatureNet, conv_out, head_parameters, image_geometry, make_head, min_frame_side, pool_out,
                                  scale_frames)
from rtcore.models.spec import ModelSpec

__all__ = ["ImpalaCNN", "impala_channels", "impala_parameters", "POOL_STRIDES", "DEEP_POOL_STRIDES"]

POOL_STRIDES: tuple[int, ...] = (2, 2, 2)
DEEP_POOL_STRIDES: tuple[int, ...] = (2, 1, 1, 1, 2, 1)


def impala_channels(k: float, deep: bool) -> list[int]:
    """Output channels of each conv stack at width k."""
    n = len(DEEP_POOL_STRIDES if deep else POOL_STRIDES)
    return [int(16 * k)] + [int(32 * k)] * (n - 1)


def _raw_feature_hw(frame_size: tuple[int, int], strides: Sequence[int]) -> tuple[int, int]:
    h, w = frame_size
    for s in strides:
        h, w = pool_out(conv_out(h, 3), 3, s), pool_out(conv_out(w, 3), 3, s)
        if h < 1 or w < 1:
            raise ValueError("too small")
    return h, w


def _feature_hw(frame_size: tuple[int, int], strides: Sequence[int]) -> tuple[int, int]:
    try:
        return _raw_feature_hw(frame_size, strides)
    except ValueError:
        side = min_frame_side(lambda fs: _raw_feature_hw(fs, strides))
        name = "impala:deep=1 (30 conv layers)" if len(strides) > 3 else "impala (15 conv layers)"
        raise ValueError(f"frames of {frame_size[0]}x{frame_size[1]} are too small for {name}: it needs at "
                         f"least {side}x{side}; use 'minatar' or 'mlp' for small frames") from None


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.relu(x))
        h = self.conv1(F.relu(h))
        return x + h


class ConvStack(nn.Module):
    """conv 3x3 (no padding) -> max-pool 3x3 -> two residual blocks."""

    def __init__(self, in_channels: int, channels: int, pool_stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3)
        self.pool = nn.MaxPool2d(3, stride=pool_stride)
        self.res0 = ResidualBlock(channels)
        self.res1 = ResidualBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaCNN(FeatureNet):
    """Impala ResNet Q-network of width multiplier ``k``; input uint8 frames (B, in_frames, *obs_shape).

    ``obs_shape`` is one frame, ``(H, W)`` or ``(C, H, W)`` (default: ``frame_size``); the stack's frames
    and channels become the first convolution's input channels.
    """

    def __init__(self, in_frames: int, n_actions: int, k: float = 1.0, deep: bool = False, dueling: bool = False,
                 hidden: int = 512, frame_size: tuple[int, int] = (84, 84), noisy: bool = False, atoms: int = 1,
                 v_min: float = 0.0, v_max: float = 200.0, obs_shape: tuple[int, ...] | None = None,
                 history_features: int = 0) -> None:
        super().__init__()
        obs_shape = tuple(int(d) for d in (obs_shape if obs_shape is not None else frame_size))
        c_in, fh, fw = image_geometry("impala", in_frames, obs_shape)
        frame_size = (fh, fw)
        strides = DEEP_POOL_STRIDES if deep else POOL_STRIDES
        channels = impala_channels(k, deep)
        h, w = _feature_hw(frame_size, strides)
        stacks = []
        self.in_channels = c_in
        for c, s in zip(channels, strides):
            stacks.append(ConvStack(c_in, c, s))
            c_in = c
        self.stacks = nn.Sequential(*stacks)
        self.head = make_head(c_in * h * w + history_features, hidden, n_actions, dueling, noisy, atoms, v_min, v_max)
        self.spec = str(ModelSpec("impala", k, deep, dueling, hidden, noisy, atoms, v_min, v_max))
        self.in_frames = in_frames
        self.n_actions = n_actions
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.obs_shape = obs_shape

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What the head sees: (B, features)."""
        x = obs.reshape(-1, self.in_channels, self.frame_size[0], self.frame_size[1])
        return F.relu(self.stacks(scale_frames(x))).flatten(1)


def impala_parameters(spec: ModelSpec, in_frames: int, n_actions: int,
                      frame_size: tuple[int, int] = (84, 84), obs_shape: tuple[int, ...] | None = None,
                      history_features: int = 0) -> int:
    """Exact parameter count of ``ImpalaCNN`` for this spec, without building it."""
    c_in, fh, fw = image_geometry("impala", in_frames, tuple(obs_shape if obs_shape is not None else frame_size))
    strides = DEEP_POOL_STRIDES if spec.deep else POOL_STRIDES
    channels = impala_channels(spec.k, spec.deep)
    h, w = _feature_hw((fh, fw), strides)
    total = 0
    for c in channels:
        total += c_in * c * 9 + c  # the stack's conv
        total += 4 * (c * c * 9 + c)  # two residual blocks of two convs
        c_in = c
    return total + head_parameters(c_in * h * w + history_features, spec.hidden, n_actions, spec.dueling, spec.noisy,
                                   spec.atoms)
