"""Q-network zoo: the paper's Impala CNN family (width k, 15 or 30 conv layers), the Nature DQN CNN, and for
small observations the MinAtar paper's network (``minatar``) and a multilayer perceptron (``mlp``).

    >>> from rtcore.models import build_model
    >>> net = build_model("impala:k=7", in_frames=1, n_actions=6)    # 10,368,742 parameters
    >>> q = net(frames)            # frames: uint8 (B, 1, 84, 84) -> float32 (B, 6)

Every model takes a stack of ``in_frames`` observations, (B, in_frames, *obs_shape), and returns one
Q-value per action. Image frames (``obs_shape`` (H, W) or (C, H, W), uint8 pixels) are scaled by 1/255
by the model itself; flat vectors (``obs_shape`` (D,), float32) go in as they are (``mlp`` only). Sizes in the paper's table (one 84x84 frame, 6 actions):

    spec            parameters
    impala:k=1         903,718      (~0.9M)
    impala:k=7      10,368,742      (10.4M)
    impala:k=29    104,682,918      (105M)
    impala:k=98  1,008,092,742      (1.0B)

:func:`count_parameters` gives exact counts without allocating anything; ``rtcore.models.export`` turns
a model into what inference workers run (TorchScript, torch.export or eager) and measures latency.
"""

from __future__ import annotations

import torch
from torch import nn

from rtcore.models.history import (MAX_ACTION_HISTORY, ActionHistoryNet, example_history, history_features,
                                   q_head)
from rtcore.models.impala import ImpalaCNN, impala_parameters
from rtcore.models.nature import NatureCNN, nature_parameters
from rtcore.models.small import MLP, MinAtarNet, minatar_parameters, mlp_parameters
from rtcore.models.spec import ARCHITECTURES, ModelSpec, parse_model_spec

__all__ = [
    "ARCHITECTURES",
    "ActionHistoryNet",
    "example_history",
    "q_head",
    "ImpalaCNN",
    "MLP",
    "MinAtarNet",
    "ModelSpec",
    "NatureCNN",
    "PAPER_SIZES",
    "build_model",
    "count_parameters",
    "example_input",
    "parse_model_spec",
]

# The paper's model sizes (spec -> parameters with in_frames=1, n_actions=6), as measured by this code.
PAPER_SIZES: dict[str, int] = {
    "impala:k=1": 903_718,
    "impala:k=7": 10_368_742,
    "impala:k=29": 104_682_918,
    "impala:k=98": 1_008_092_742,
}


def _check_dims(in_frames: int, n_actions: int, frame_size: tuple[int, int],
                obs_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if not isinstance(in_frames, int) or isinstance(in_frames, bool) or in_frames < 1:
        raise ValueError(f"in_frames must be a positive integer (frames stacked per observation), got {in_frames!r}")
    if not isinstance(n_actions, int) or isinstance(n_actions, bool) or n_actions < 1:
        raise ValueError(f"n_actions must be a positive integer, got {n_actions!r}")
    if obs_shape is not None:
        try:
            shape = tuple(int(d) for d in obs_shape)
        except (TypeError, ValueError):
            raise ValueError(f"obs_shape must be a tuple of ints, (D,), (H, W) or (C, H, W); got {obs_shape!r}") from None
        if not 1 <= len(shape) <= 3 or any(d < 1 for d in shape):
            raise ValueError(f"obs_shape must be (D,), (H, W) or (C, H, W) with positive sizes, got {obs_shape!r}")
        return shape
    try:
        h, w = (int(frame_size[0]), int(frame_size[1]))
        if len(frame_size) != 2:
            raise TypeError
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"frame_size must be (height, width), got {frame_size!r}") from None
    return (h, w)


def _check_history(action_history: int) -> int:
    if (not isinstance(action_history, int) or isinstance(action_history, bool)
            or not 0 <= action_history <= MAX_ACTION_HISTORY):
        raise ValueError(f"action_history must be an integer in [0, {MAX_ACTION_HISTORY}] (actions fed to the model "
                         f"beside the frames; 0 = off), got {action_history!r}")
    return action_history


def build_model(spec: str | ModelSpec, in_frames: int, n_actions: int, *,
                frame_size: tuple[int, int] = (84, 84), obs_shape: tuple[int, ...] | None = None,
                action_history: int = 0) -> nn.Module:
    """Builds the Q-network named by ``spec`` (see :func:`parse_model_spec`) in eval mode on the CPU.

    ``obs_shape`` is the shape of one observation frame: ``(H, W)``, ``(C, H, W)`` or a vector ``(D,)``
    (default: ``frame_size``, one greyscale frame). The module has attributes ``spec`` (canonical spec
    string), ``in_frames``, ``n_actions``, ``obs_shape`` and ``frame_size``, which survive TorchScript.
    A frame too small for a network raises ``ValueError`` naming the smallest size it takes.

    ``action_history`` K > 0 gives an :class:`~rtcore.models.history.ActionHistoryNet` taking
    ``forward(obs, hist)`` (``hist``: int ``(B, K + 1)``, see :mod:`rtcore.models.history`), with the
    attribute ``action_history``; K = 0 gives the plain network, ``forward(obs)``.
    """
    s = parse_model_spec(spec)
    shape = _check_dims(in_frames, n_actions, frame_size, obs_shape)
    k = _check_history(action_history)
    head = dict(noisy=s.noisy, atoms=s.atoms, v_min=s.v_min, v_max=s.v_max, history_features=history_features(k, n_actions))
    if s.arch == "impala":
        model: nn.Module = ImpalaCNN(in_frames, n_actions, s.k, s.deep, s.dueling, s.hidden, obs_shape=shape, **head)
    elif s.arch == "nature":
        model = NatureCNN(in_frames, n_actions, s.k, s.dueling, s.hidden, obs_shape=shape, **head)
    elif s.arch == "minatar":
        model = MinAtarNet(in_frames, n_actions, s.k, s.dueling, s.hidden, obs_shape=shape, **head)
    else:
        model = MLP(in_frames, n_actions, s.hidden, s.layers, s.dueling, obs_shape=shape, **head)
    if k:
        model = ActionHistoryNet(model, k, n_actions)
    return model.eval()


def count_parameters(spec: str | ModelSpec, in_frames: int, n_actions: int, *,
                     frame_size: tuple[int, int] = (84, 84), obs_shape: tuple[int, ...] | None = None,
                     action_history: int = 0) -> int:
    """Exact number of parameters of ``build_model(spec, in_frames, n_actions, ...)``, computed without building it."""
    s = parse_model_spec(spec)
    shape = _check_dims(in_frames, n_actions, frame_size, obs_shape)
    extra = history_features(_check_history(action_history), n_actions)
    if s.arch == "impala":
        return impala_parameters(s, in_frames, n_actions, obs_shape=shape, history_features=extra)
    if s.arch == "nature":
        return nature_parameters(s, in_frames, n_actions, obs_shape=shape, history_features=extra)
    if s.arch == "minatar":
        return minatar_parameters(s, in_frames, n_actions, shape, extra)
    return mlp_parameters(s, in_frames, n_actions, shape, extra)


def example_input(model: nn.Module, batch: int = 1, *, device: str | torch.device = "cpu",
                  seed: int = 0) -> torch.Tensor:
    """A seeded batch of what ``model`` takes: uint8 frames, or float32 vectors for a vector observation."""
    shape = tuple(getattr(model, "obs_shape", model.frame_size))
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        x = torch.randn((batch, model.in_frames, *shape), generator=g)
    else:
        x = torch.randint(0, 256, (batch, model.in_frames, *shape), dtype=torch.uint8, generator=g)
    return x.to(device)
