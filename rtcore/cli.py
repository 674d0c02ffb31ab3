"""The ``rtcore`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches. ``rtcore`` with no subcommand runs the default job
(``rtcore run`` with its defaults: a short realtime game on CPU).

Exit codes: 0 done; 2 a bad option (argparse's convention: one line ``rtcore CMD: error: ...`` on
stderr; each command checks its options before it starts work, see ``rtcore._validate.bad_option``);
130 Ctrl-C. A failure of the work itself is not a bad option: it raises (a traceback, exit 1), and
``rtcore run`` exits 1 when the environment died.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rtcore.launch", "play a game in real time with a model, learning while it plays"),
    "play": ("rtcore.agent.play", "play a trained policy in real time (greedy), optionally recording it"),
    "simulate": ("rtcore.simulation", "simulate staggered inference on a virtual clock (deterministic)"),
    "bench": ("rtcore.benchmarks", "measure model latency and other figures the runner sizes itself by"),
    "report": ("rtcore.agent.report", "redraw the plots and summary of a run directory"),
    "cleanup": ("rtcore.shared.cleanup", "remove shared-memory segments left by killed rtcore processes"),
    "repro": ("rtcore.repro", "the paper's experiments: inaction | scaling | delay-learning (figure, CSV, JSON line)"),
    "gb-record-state": ("rtcore.envs.gameboy", "record a PyBoy save state after a scripted button sequence"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. Only `command`'s module is imported (torch loads only when needed), so
    `rtcore simulate` starts fast; the other subcommands are listed with their one-line help."""
    parser = argparse.ArgumentParser(
        prog="rtcore",
        description="Realtime reinforcement learning with staggered asynchronous inference.",
    )
    from rtcore import __version__

    parser.add_argument("--version", action="version", version=f"rtcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip().splitlines()[0]
        p = sub.add_parser(name, help=help_text, description=doc)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `rtcore`, `rtcore --seconds 30`: the default job
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_main", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
