"""The Nature DQN CNN (Mnih et al. 2015), with the paper's width multiplier k.

    frames (B, in_frames, 84, 84) uint8 -> /255
    conv 8x8 stride 4, int(16k) ch -> relu -> conv 4x4 stride 2, int(32k) -> relu -> conv 3x3, int(32k) -> relu
    flatten -> fc(hidden=512) -> relu -> fc(n_actions)        (or a dueling head)

k=2 (the default) is the original network: 32, 64, 64 channels, 3136 -> 512 (1.69M parameters with four
frames and six actions).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rtcore.models.layers import FeatureNet, conv_out, head_parameters, image_geometry, make_head, min_frame_side, scale_frames
from rtcore.models.spec import ModelSpec

__all__ = ["NatureCNN", "nature_parameters"]

_LAYERS = ((8, 4), (4, 2), (3, 1))  # (kernel, stride)


def _channels(k: float) -> tuple[int, int, int]:
    return int(16 * k), int(32 * k), int(32 * k)


def _raw_feature_hw(frame_size: tuple[int, int]) -> tuple[int, int]:
    h, w = frame_size
    for kernel, stride in _LAYERS:
        h, w = conv_out(h, kernel, stride), conv_out(w, kernel, stride)
    if h < 1 or w < 1:
        raise ValueError("too small")
    return h, w


def _feature_hw(frame_size: tuple[int, int]) -> tuple[int, int]:
    try:
        return _raw_feature_hw(frame_size)
    except ValueError:
        side = min_frame_side(_raw_feature_hw)
        raise ValueError(f"frames of {frame_size[0]}x{frame_size[1]} are too small for the Nature CNN: it needs "
                         f"at least {side}x{side}; use 'minatar' or 'mlp' for small frames") from None


class NatureCNN(FeatureNet):
    """Nature DQN Q-network; input uint8 frames (B, in_frames, *obs_shape), ``obs_shape`` (H, W) or (C, H, W)."""

    def __init__(self, in_frames: int, n_actions: int, k: float = 2.0, dueling: bool = False, hidden: int = 512,
                 frame_size: tuple[int, int] = (84, 84), noisy: bool = False, atoms: int = 1, v_min: float = 0.0,
                 v_max: float = 200.0, obs_shape: tuple[int, ...] | None = None, history_features: int = 0) -> None:
        super().__init__()
        obs_shape = tuple(int(d) for d in (obs_shape if obs_shape is not None else frame_size))
        c_in, fh, fw = image_geometry("nature", in_frames, obs_shape)
        frame_size = (fh, fw)
        c1, c2, c3 = _channels(k)
        h, w = _feature_hw(frame_size)
        self.in_channels = c_in
        self.conv0 = nn.Conv2d(c_in, c1, 8, stride=4)
        self.conv1 = nn.Conv2d(c1, c2, 4, stride=2)
        self.conv2 = nn.Conv2d(c2, c3, 3, stride=1)
        self.head = make_head(c3 * h * w + history_features, hidden, n_actions, dueling, noisy, atoms, v_min, v_max)
        self.spec = str(ModelSpec("nature", k, False, dueling, hidden, noisy, atoms, v_min, v_max))
        self.in_frames = in_frames
        self.n_actions = n_actions
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.obs_shape = obs_shape

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What the head sees: (B, features)."""
        x = obs.reshape(-1, self.in_channels, self.frame_size[0], self.frame_size[1])
        x = F.relu(self.conv0(scale_frames(x)))
        x = F.relu(self.conv1(x))
        return F.relu(self.conv2(x)).flatten(1)


def nature_parameters(spec: ModelSpec, in_frames: int, n_actions: int,
                      frame_size: tuple[int, int] = (84, 84), obs_shape: tuple[int, ...] | None = None,
                      history_features: int = 0) -> int:
    """Exact parameter count of ``NatureCNN`` for this spec, without building it."""
    c_in, fh, fw = image_geometry("nature", in_frames, tuple(obs_shape if obs_shape is not None else frame_size))
    c1, c2, c3 = _channels(spec.k)
    h, w = _feature_hw((fh, fw))
    convs = (c_in * c1 * 64 + c1) + (c1 * c2 * 16 + c2) + (c2 * c3 * 9 + c3)
    return convs + head_parameters(c3 * h * w + history_features, spec.hidden, n_actions, spec.dueling, spec.noisy, spec.atoms)
