"""Observation preprocessing for pixel environments: grayscale and area resize to 84x84 uint8.

One :class:`Preprocessor` per env, built once for the emulator's frame size; each call runs a C++ kernel
(``csrc/preprocess/resize.h``) without the GIL and without allocating: RGB(A) frames are converted to
BT.601 luma and every output pixel is the average of the input area it covers (what OpenCV's
``INTER_AREA`` computes, rounded to nearest). Frame stacking is deliberately not done here: the replay
buffer and the boards stack frames by index, so an env hands out single frames.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rtcore import _core

#: The observation size of the paper's agents (and of DQN's Atari preprocessing).
OBS_SIZE = 84


class Preprocessor:
    """Grayscale + area resize of ``in_shape`` frames (``(H, W)`` or ``(H, W, C)``, C in 1, 3, 4) to
    ``out_shape`` uint8. A grey ``(H, W)`` frame may be a strided view (e.g. one channel of an RGBA
    screen whose palette is grey).

    Not safe to call from two threads at once (it keeps a scratch buffer); make one per env.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int] = (OBS_SIZE, OBS_SIZE)) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        out_shape = tuple(int(s) for s in out_shape)
        if len(in_shape) not in (2, 3) or (len(in_shape) == 3 and in_shape[2] not in (1, 3, 4)):
            raise ValueError(f"frame shape {in_shape} is not (H, W) or (H, W, C) with C in 1, 3 or 4")
        if len(out_shape) != 2:
            raise ValueError(f"out_shape must be (height, width), got {out_shape}")
        self.in_shape = in_shape
        self.out_shape = out_shape
        self._resize = _core.AreaResize(in_shape[0], in_shape[1], out_shape[0], out_shape[1])

    def __call__(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Preprocess ``frame`` into ``out`` (a new array if None) and return it."""
        if out is None:
            out = np.empty(self.out_shape, np.uint8)
        self._resize(frame, out)
        return out

    def __repr__(self) -> str:
        return f"Preprocessor({self.in_shape} -> {self.out_shape})"
