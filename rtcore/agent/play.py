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
import time
from pathlib import Path
from typing import Any

from rtcore._validate import OPTION_ERRORS, bad_option
from rtcore.agent.checkpoint import find_state, load_state
from rtcore.agent.recording import check_record_path, encode

__all__ = ["play", "add_arguments", "main"]


def play(where: str | os.PathLike[str], seconds: float = 30.0, *, record: str | None = None,
         run_dir: str | None = None, **overrides: Any):
    """Plays the policy of a run directory or checkpoint for ``seconds``; returns the RunSummary.

    ``overrides`` are RunConfig fields (e.g. ``workers=4``, ``device="cuda"``). A checkpoint of another
    model or env than the saved config describes is refused (``CheckpointMismatch``).
    """
    return _play(*plan_play(where, seconds, record=record, run_dir=run_dir, **overrides))


def plan_play(where: str | os.PathLike[str], seconds: float = 30.0, *, record: str | None = None,
              run_dir: str | None = None, **overrides: Any):
    """Everything :func:`play` checks before it starts (a bad path, checkpoint or option raises here)."""
    from rtcore.agent.config import RunConfig
    from rtcore.agent.runner import check_options

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
    check_options(cfg)
    return cfg, path, state, record


def _play(cfg: Any, path: Path, state: Any, record: str | None):
    from rtcore.agent.runner import execute

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
        return bad_option("rtcore play", ValueError(f"--seconds must be a positive number, got {args.seconds}"))
    try:
        plan = plan_play(args.source, args.seconds, record=args.record, run_dir=args.run_dir, **overrides)
    except OPTION_ERRORS as exc:  # a bad path, checkpoint or option: say which, no traceback
        return bad_option("rtcore play", exc)
    summary = _play(*plan)
    if args.json:
        print(json.dumps(summary.to_dict()))
    elif not args.quiet:
        print_summary(summary)
    return 0 if summary.stopped_by in ("time", "sigterm") else 1
