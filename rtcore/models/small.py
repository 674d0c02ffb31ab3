"""Q-networks for small observations: the MinAtar paper's network and a multilayer perceptron.

``minatar`` (Young & Tian 2019, the DQN of the MinAtar paper)::

    frames (B, in_frames, [C,] H, W) uint8 -> /255 -> channels = in_frames * C
    conv 3x3 stride 1, int(16k) channels (no padding) -> relu -> flatten -> fc(hidden=128) -> relu -> fc(n_actions)

``mlp``: the observation stack flattened (image frames scaled by 1/255, vectors as they are), then
``layers`` hidden layers of ``hidden`` units with ReLU (default 2 x 256), then one Q-value per action
(or a dueling head over the last hidden layer).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rtcore.models.layers import FeatureNet, conv_out, head_parameters, image_geometry, make_head, scale_frames
from rtcore.models.spec import ModelSpec

__all__ = ["MinAtarNet", "MLP", "minatar_parameters", "mlp_parameters"]


def _minatar_features(spec_k: float, in_frames: int, obs_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    c_in, h, w = image_geometry("minatar", in_frames, obs_shape)
    fh, fw = conv_out(h, 3), conv_out(w, 3)
    if fh < 1 or fw < 1:
        raise ValueError(f"frames of {h}x{w} are too small for minatar: it needs at least 3x3")
    return c_in, h, w, int(16 * spec_k) * fh * fw


class MinAtarNet(FeatureNet):
    """The MinAtar paper's Q-network (see the module docstring)."""

    def __init__(self, in_frames: int, n_actions: int, k: float = 1.0, dueling: bool = False, hidden: int = 128,
                 obs_shape: tuple[int, ...] = (10, 10), noisy: bool = False, atoms: int = 1, v_min: float = 0.0,
                 v_max: float = 200.0, history_features: int = 0) -> None:
        super().__init__()
        obs_shape = tuple(int(d) for d in obs_shape)
        c_in, h, w, features = _minatar_features(k, in_frames, obs_shape)
        self.in_channels = c_in
        self.conv = nn.Conv2d(c_in, int(16 * k), 3)
        self.head = make_head(features + history_features, hidden, n_actions, dueling, noisy, atoms, v_min, v_max)
        self.spec = str(ModelSpec("minatar", k, False, dueling, hidden, noisy=noisy, atoms=atoms, v_min=v_min,
                                  v_max=v_max))
        self.in_frames = in_frames
        self.n_actions = n_actions
        self.frame_size = (h, w)
        self.obs_shape = obs_shape

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What the head sees: (B, features)."""
        x = obs.reshape(-1, self.in_channels, self.frame_size[0], self.frame_size[1])
        return F.relu(self.conv(scale_frames(x))).flatten(1)


def minatar_parameters(spec: ModelSpec, in_frames: int, n_actions: int, obs_shape: tuple[int, ...],
                       history_features: int = 0) -> int:
    c_in, _, _, features = _minatar_features(spec.k, in_frames, tuple(obs_shape))
    c = int(16 * spec.k)
    return c_in * c * 9 + c + head_parameters(features + history_features, spec.hidden, n_actions, spec.dueling, spec.noisy, spec.atoms)


class MLP(FeatureNet):
    """A multilayer perceptron Q-network over the flattened observation stack (see the module docstring)."""

    def __init__(self, in_frames: int, n_actions: int, hidden: int = 256, layers: int = 2, dueling: bool = False,
                 obs_shape: tuple[int, ...] = (4,), noisy: bool = False, atoms: int = 1, v_min: float = 0.0,
                 v_max: float = 200.0, history_features: int = 0) -> None:
        super().__init__()
        obs_shape = tuple(int(d) for d in obs_shape)
        self.in_features = in_frames * math.prod(obs_shape)
        # image frames are pixels on a 0..255 scale, like every image model's input; vectors are used as is
        self.input_scale = 1.0 / 255.0 if len(obs_shape) >= 2 else 1.0
        body: list[nn.Module] = []
        width = self.in_features + history_features  # an action history joins the input
        # the last hidden layer belongs to the head (make_head: fc -> relu -> out), as in the conv nets
        for _ in range(max(0, layers - 1)):
            body += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*body)
        if layers < 1 and (noisy or atoms > 1):
            raise ValueError("mlp: noisy and distributional heads need layers >= 1")
        self.head = (make_head(width, hidden, n_actions, dueling, noisy, atoms, v_min, v_max) if layers >= 1
                     else nn.Linear(width, n_actions))
        self.spec = str(ModelSpec("mlp", 1.0, False, dueling, hidden, noisy=noisy, atoms=atoms, v_min=v_min, v_max=v_max,
                                  layers=layers))
        self.in_frames = in_frames
        self.n_actions = n_actions
        self.frame_size = (int(obs_shape[-2]), int(obs_shape[-1])) if len(obs_shape) >= 2 else (1, int(obs_shape[0]))
        self.obs_shape = obs_shape

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """What the head sees: (B, features)."""
        return self.body(obs.reshape(-1, self.in_features).to(torch.float32) * self.input_scale)

    def _input_with(self, obs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs.reshape(-1, self.in_features).to(torch.float32) * self.input_scale, extra], 1)

    def forward_with(self, obs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Q-values with ``extra`` inputs (B, history_features) concatenated to the flattened stack."""
        return self.head(self.body(self._input_with(obs, extra)))

    def log_dist_with(self, obs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """:meth:`log_dist` with ``extra`` inputs, as :meth:`forward_with`."""
        return self.head.log_dist(self.body(self._input_with(obs, extra)))


def mlp_parameters(spec: ModelSpec, in_frames: int, n_actions: int, obs_shape: tuple[int, ...],
                   history_features: int = 0) -> int:
    width = in_frames * math.prod(int(d) for d in obs_shape) + history_features
    total = 0
    for _ in range(max(0, spec.layers - 1)):
        total += width * spec.hidden + spec.hidden
        width = spec.hidden
    if spec.layers >= 1:
        return total + head_parameters(width, spec.hidden, n_actions, spec.dueling, spec.noisy, spec.atoms)
    return total + width * n_actions + n_actions
