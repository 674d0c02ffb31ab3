"""``rtcore run`` and ``rtcore.run``: one machine (:mod:`rtcore.agent.runner`) or a Ray cluster
(:mod:`rtcore.cluster`, with ``--cluster``).

The options, their checks and the output are the local runner's; this module only picks where the run
goes (it sits above both, so neither imports the other).
"""

from __future__ import annotations

import argparse
import json

from rtcore._validate import OPTION_ERRORS, bad_option
from rtcore.agent import runner as _local
from rtcore.agent.accounting import RunSummary, print_summary
from rtcore.agent.config import RunConfig, config_from_args

__doc__ = _local.__doc__  # `rtcore run --help` describes the run
__all__ = ["run", "add_arguments", "main"]


def run(config: RunConfig | None = None) -> RunSummary:
    """Runs ``config`` (default: ``RunConfig()``) to the end and returns its summary: on this machine, or
    spread over a Ray cluster when ``config.cluster`` is set (see :mod:`rtcore.cluster`).

    Ctrl-C or SIGTERM ends the run early, cleanly (the summary says ``stopped_by``). No process or
    shared-memory segment outlives the call."""
    cfg = (config or RunConfig()).validate()
    if cfg.cluster:
        from rtcore.cluster import run_cluster

        return run_cluster(cfg)
    return _local.run(cfg)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _local.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """``rtcore run``: a bad option exits 2 with one line; a failure of the run itself raises."""
    if not getattr(args, "cluster", None):
        return _local.main(args)
    try:
        cfg = config_from_args(args)
        _local.check_options(cfg)
    except OPTION_ERRORS as exc:
        return bad_option("rtcore run", exc)
    summary = run(cfg)
    if cfg.json:
        print(json.dumps(summary.to_dict()))
    elif not cfg.quiet:
        from rtcore.cluster.summary import print_cluster

        print_summary(summary)
        print_cluster(summary)
    return {"time": 0, "interrupt": 130, "sigterm": 143}.get(summary.stopped_by, 1)  # 1: a fault ended it
