"""Play a trained policy in real time: ``rtcore play RUN_DIR|CHECKPOINT``.

    rtcore play runs/Breakout-20261201-2200 --seconds 30 --record breakout.gif

The policy runs greedily (epsilon 0) with the same staggered inference workers as the run that trained
it, on the wall clock, with no learner; the summary reports the return, inaction and delay as a run
does. The play's own run directory is ``RUN_DIR/play/<timestamp>`` (``--run-dir`` to choose).

``--record FILE.gif`` (Pillow, installed with matplotlib) or ``FILE.mp4`` (``pip install
"rtcore[video]"``) writes what the agent saw. The env process only appends each raw frame to a file
next to the recording (one small write per tick); the frames are encoded after the run, so recording
costs the realtime loop almost nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rtcore.agent.checkpoint import find_state, load_state

__all__ = ["play", "recording_env", "add_arguments", "main"]

MAX_RECORDED_FRAMES = 36_000  # 10 minutes at 60 Hz
_SUFFIXES = (".gif", ".mp4")


def play(where: str | os.PathLike[str], seconds: float = 30.0, *, record: str | None = None,
         run_dir: str | None = None, **overrides: Any):
    """Plays the policy of a run directory or checkpoint for ``seconds``; returns the RunSummary.

    ``overrides`` are RunConfig fields (e.g. ``workers=4``, ``device="cuda"``). A checkpoint of another
    model or env than the saved config describes is refused (``CheckpointMismatch``).
    """
    from rtcore.agent.config import RunConfig
    from rtcore.agent.runner import execute

    path = find_state(where)
    state = load_state(path)
    train_dir = path.parent.parent
    cfg_path = train_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path} is not inside a run directory with a config.json ({train_dir})")
    if record is not None:
        check_record_path(record)
    saved = json.loads(cfg_path.read_text())
    values = {k: v for k, v in saved.items() if k in {f for f in RunConfig.__dataclass_fields__}}
    values.update(learners=0, epsilon_start=0.0, epsilon_end=0.0, seconds=float(seconds), resume=None,
                  checkpoint_interval=0.0,
                  run_dir=run_dir or str(train_dir / "play" / time.strftime("%Y%m%d-%H%M%S")))
    values.update(overrides)
    cfg = RunConfig(**values).validate()
    raw = None if record is None else Path(cfg.run_dir) / "frames.raw"

    def prepare(r: Any) -> None:
        r.start_from(path, state, params_only=True)
        r.record = None if raw is None else str(raw)

    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    summary = execute(cfg, prepare)
    if raw is not None:
        n = encode(raw, record, fps=1.0 / summary.tau_m)
        summary.extra["recorded_frames"] = n
        summary.extra["recording"] = str(record)
    return summary


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


# ---------------------------------------------------------------------- recording
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


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="a run directory or a checkpoints/<tag>.pt file")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S", help="wall-clock length (default: 30)")
    parser.add_argument("--record", metavar="FILE", help="write what the agent saw to FILE.gif or FILE.mp4")
    parser.add_argument("--workers", metavar="N|auto", help="inference workers (default: the run's setting)")
    parser.add_argument("--device", metavar="DEV", help="inference device (default: the run's)")
    parser.add_argument("--run-dir", metavar="PATH", help="where the play's metrics go (default: RUN_DIR/play/<time>)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--quiet", action="store_true", help="no live view")


def main(args: argparse.Namespace) -> int:
    from rtcore.agent.accounting import print_summary

    overrides: dict[str, Any] = {"json": args.json, "quiet": args.quiet}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.device is not None:
        overrides["device"] = args.device
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        print(f"rtcore play: error: --seconds must be a positive number, got {args.seconds}", file=sys.stderr)
        return 2
    try:
        summary = play(args.source, args.seconds, record=args.record, run_dir=args.run_dir, **overrides)
    except (ValueError, FileNotFoundError) as exc:  # a bad path, checkpoint or option: say which
        print(f"rtcore play: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict()))
    elif not args.quiet:
        print_summary(summary)
    return 0 if summary.stopped_by in ("time", "sigterm") else 1
