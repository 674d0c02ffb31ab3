"""Recording what the agent saw: the env process appends raw frames, encoded into a GIF or MP4 afterwards.

The env process only appends each raw observation to a file (one small write per tick), so recording
costs the realtime loop almost nothing; :func:`encode` turns the file into ``.gif`` (Pillow, installed
with matplotlib) or ``.mp4`` (``pip install "rtcore[video]"``) after the run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["check_record_path", "encode", "recording_env", "to_image"]

MAX_RECORDED_FRAMES = 36_000  # 10 minutes at 60 Hz
_SUFFIXES = (".gif", ".mp4")


def check_record_path(record: str) -> None:
    """Refuses up front what cannot be written (an unknown format, MP4 without its extra)."""
    suffix = Path(record).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"--record {record!r}: expected a .gif or .mp4 file name")
    if suffix == ".mp4":
        import importlib.util

        if importlib.util.find_spec("imageio_ffmpeg") is None:
            raise ValueError('--record to .mp4 needs imageio-ffmpeg: pip install "rtcore[video]" (or record a .gif)')
    parent = Path(record).resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--record {record!r}: the folder {parent} does not exist")


def recording_env(env_fn: Callable[[], Any], raw_path: str):
    """``env_fn()`` wrapped so that every observation it returns is appended to ``raw_path``."""
    import gymnasium as gym

    env = env_fn()
    shape = tuple(env.observation_space.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and min(shape) <= 16)):
        env.close()
        raise ValueError(f"--record needs image observations (H x W or channels x H x W), this env's are {shape}")

    class _Recorder(gym.Wrapper):
        def __init__(self) -> None:
            super().__init__(env)
            self.frame_time = getattr(env, "frame_time", None)
            self.default_action = getattr(env, "default_action", None)
            self._f = open(raw_path, "wb")
            self._n = 0
            Path(raw_path + ".json").write_text(json.dumps({"shape": list(shape),
                                                            "dtype": str(env.observation_space.dtype)}))

        def _keep(self, obs: Any) -> None:
            if self._n < MAX_RECORDED_FRAMES:
                self._f.write(np.ascontiguousarray(obs).tobytes())
                self._n += 1

        def reset(self, **kw: Any):
            obs, info = self.env.reset(**kw)
            self._keep(obs)
            return obs, info

        def step(self, action: Any):
            out = self.env.step(action)
            self._keep(out[0])
            return out

        def close(self) -> None:
            if not self._f.closed:
                self._f.close()
            self.env.close()

    return _Recorder()


def to_image(obs: np.ndarray) -> np.ndarray:
    """One observation as an RGB uint8 image, scaled up (nearest) to at least 160 pixels wide.

    ``H x W`` is grey; ``3 x H x W`` / ``H x W x 3`` colour; any other channel count (MinAtar's object
    planes) is drawn with one colour per channel."""
    a = np.asarray(obs)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.ndim == 2:
        img = np.repeat(_to_u8(a)[:, :, None], 3, axis=2)
    else:
        chw = a if a.shape[0] <= 16 and a.shape[0] < a.shape[-1] else np.moveaxis(a, -1, 0)
        if chw.shape[0] == 3:
            img = np.moveaxis(_to_u8(chw), 0, -1)
        elif chw.shape[0] == 1:
            img = np.repeat(_to_u8(chw[0])[:, :, None], 3, axis=2)
        else:
            palette = _palette(chw.shape[0])
            on = chw > 0
            img = np.zeros((*chw.shape[1:], 3), np.uint8)
            for c in range(chw.shape[0]):
                img[on[c]] = palette[c]
    scale = max(1, math.ceil(160 / img.shape[1]))
    return np.ascontiguousarray(img.repeat(scale, axis=0).repeat(scale, axis=1))


def _to_u8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _palette(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(n)]) * 255).astype(np.uint8)


def encode(raw: Path, out: str, fps: float) -> int:
    """Encodes the raw frames of a recording into ``out`` (GIF or MP4); returns the frame count."""
    meta = json.loads(Path(str(raw) + ".json").read_text())
    shape, dtype = tuple(meta["shape"]), np.dtype(meta["dtype"])
    frames = np.fromfile(raw, dtype=dtype)
    n = frames.size // int(np.prod(shape))
    frames = frames[: n * int(np.prod(shape))].reshape(n, *shape)
    if n == 0:
        raise RuntimeError(f"no frame was recorded into {raw}")
    images = [to_image(f) for f in frames]
    if Path(out).suffix.lower() == ".gif":
        from PIL import Image

        duration = max(20, round(1000.0 / fps / 10) * 10)  # GIF delays are in 10 ms units; browsers floor at 20
        step = max(1, round(duration * fps / 1000.0))      # drop frames rather than slow the game down
        pics = [Image.fromarray(im) for im in images[::step]]
        pics[0].save(out, save_all=True, append_images=pics[1:], duration=duration, loop=0, optimize=False)
    else:
        import imageio_ffmpeg

        h, w = images[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(out, (w, h), fps=fps, macro_block_size=1)
        writer.send(None)
        for im in images:
            writer.send(im)
        writer.close()
    raw.unlink()
    Path(str(raw) + ".json").unlink()
    return n


