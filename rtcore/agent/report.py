"""Redraw the plots and summary of a run directory: ``rtcore report RUN_DIR``.

Reads ``metrics.csv``, ``summary.json``, ``action_intervals.npy`` and ``delay_histogram.npy`` (those
present) and writes into ``RUN_DIR/plots/``:

- ``return.png``: episode return and its running mean over wall-clock time;
- ``inaction_delay.png``: inaction (share of default-action steps) and delay (env steps between an
  action's observation and its application) over time;
- ``action_interval.png``: histogram of the time between posted actions, against the schedule's target
  interval and the env period tau_M;
- ``regret.png``: the realtime-regret breakdown: the share of steps exposed to inaction regret
  (default action) and to delay regret (acted on an observation d >= 1 steps old), by delay.

``rtcore run`` calls :func:`draw` at the end of every run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rtcore._validate import OPTION_ERRORS, bad_option
from rtcore.agent.metrics import read_metrics

__all__ = ["draw", "add_arguments", "main", "regret_shares"]

PLOTS = ("return.png", "inaction_delay.png", "action_interval.png", "regret.png")


def check_run_dir(run_dir: Path) -> None:
    """``FileNotFoundError`` unless ``run_dir`` holds the metrics of a run."""
    if not (run_dir / "metrics.csv").exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.csv; expected a run directory written by `rtcore run`")


def _load(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray, np.ndarray]:
    check_run_dir(run_dir)
    metrics = read_metrics(run_dir)
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    iv = np.load(run_dir / "action_intervals.npy") if (run_dir / "action_intervals.npy").exists() else np.empty(0)
    dh = np.load(run_dir / "delay_histogram.npy") if (run_dir / "delay_histogram.npy").exists() else np.empty(0)
    return metrics, summary, iv, dh


def regret_shares(inaction_fraction: float, delay_histogram: np.ndarray) -> dict[str, float]:
    """Shares of env steps by regret source: ``inaction``, ``delay`` (acted, d >= 1), ``on_time`` (acted, d = 0).

    ``delay_histogram[d]`` counts the steps that applied an action computed from an observation ``d``
    steps old (the last bin holds everything beyond). Shares sum to 1.
    """
    inaction = float(inaction_fraction) if math.isfinite(inaction_fraction) else 0.0
    acted = 1.0 - inaction
    h = np.asarray(delay_histogram, dtype=np.float64)
    if h.size == 0 or h.sum() <= 0:
        return {"inaction": inaction, "delay": math.nan, "on_time": math.nan}
    on_time = acted * h[0] / h.sum()
    return {"inaction": inaction, "delay": acted - on_time, "on_time": on_time}


def draw(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draws the run's plots into ``run_dir/plots``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m, s, intervals, delay_hist = _load(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    title = f"{s.get('env', '')} {s.get('model', '')} ({s.get('mode', '')})".strip()
    t = m.get("time_s", np.empty(0))
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        p = out / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    # 1. return over time
    fig, ax = plt.subplots(figsize=(7, 4))
    ret, mean_ret = m.get("episode_return", np.empty(0)), m.get("mean_return", np.empty(0))
    if np.isfinite(ret).any():
        ax.plot(t, ret, ".", ms=4, alpha=0.5, label="newest episode")
        ax.plot(t, mean_ret, "-", label="mean of last 100")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no episode finished", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("wall-clock time (s)")
    ax.set_ylabel("episode return")
    save(fig, "return.png")

    # 2. inaction and delay over time
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    a1.plot(t, 100 * m.get("inaction_window", np.full_like(t, np.nan)), label="per interval")
    a1.plot(t, 100 * m.get("inaction_fraction", np.full_like(t, np.nan)), "--", label="since start")
    a1.set_ylabel("inaction (% of steps)")
    a1.set_ylim(bottom=0)
    a1.legend()
    a2.plot(t, m.get("delay_window", np.full_like(t, np.nan)), label="mean per interval")
    a2.plot(t, m.get("delay_p50", np.full_like(t, np.nan)), "--", label="p50 since start")
    a2.plot(t, m.get("delay_p99", np.full_like(t, np.nan)), ":", label="p99 since start")
    a2.set_ylabel("delay (env steps)")
    a2.set_xlabel("wall-clock time (s)")
    a2.set_ylim(bottom=0)
    a2.legend()
    save(fig, "inaction_delay.png")

    # 3. action-interval histogram against the target
    fig, ax = plt.subplots(figsize=(7, 4))
    target = s.get("action_interval_target")
    tau_m = s.get("tau_m")
    if intervals.size:
        ms = 1e3 * intervals
        hi = np.quantile(ms, 0.995) if ms.size > 10 else ms.max()
        ax.hist(np.clip(ms, 0, hi * 1.2), bins=60, color="C0", alpha=0.8)
        if target:
            ax.axvline(1e3 * target, color="C3", label=f"target interval = {1e3 * target:.1f} ms")
        if tau_m:
            ax.axvline(1e3 * tau_m, color="k", ls="--", label=f"env period tau_M = {1e3 * tau_m:.1f} ms")
        cv = float(intervals.std() / intervals.mean()) if intervals.mean() > 0 else math.nan
        ax.set_title(f"{intervals.size:,} intervals, mean {1e3 * intervals.mean():.2f} ms, CV {cv:.3f}", fontsize=9)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no actions recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time between posted actions (ms)")
    ax.set_ylabel("count")
    save(fig, "action_interval.png")

    # 4. regret breakdown
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    inaction = s.get("inaction_fraction")
    if inaction is None and m.get("inaction_fraction", np.empty(0)).size:
        finite = m["inaction_fraction"][np.isfinite(m["inaction_fraction"])]
        inaction = float(finite[-1]) if finite.size else math.nan
    shares = regret_shares(math.nan if inaction is None else float(inaction), delay_hist)
    labels = ["inaction\n(default action)", "delay\n(acted, d >= 1)", "on time\n(acted, d = 0)"]
    vals = [shares["inaction"], shares["delay"], shares["on_time"]]
    colors = ["C3", "C1", "C2"]
    a1.bar(range(3), [100 * v if math.isfinite(v) else 0 for v in vals], color=colors)
    a1.set_xticks(range(3), labels, fontsize=8)
    a1.set_ylabel("% of env steps")
    a1.set_title("where the steps went", fontsize=9)
    if delay_hist.size and delay_hist.sum() > 0:
        last = int(np.flatnonzero(delay_hist)[-1])
        shown = delay_hist[:max(last + 2, 4)]  # trim the empty tail of the fixed-size histogram
        d = np.arange(shown.size)
        acted = 1.0 - (shares["inaction"] or 0.0)
        a2.bar(d, 100 * acted * shown / delay_hist.sum(), color=["C2"] + ["C1"] * (shown.size - 1))
        a2.set_xlabel("delay of the applied action (env steps)")
        a2.set_ylabel("% of env steps")
        mean_d = float((np.arange(delay_hist.size) * delay_hist).sum() / delay_hist.sum())
        a2.set_title(f"delay regret exposure: mean delay {mean_d:.2f} steps", fontsize=9)
    else:
        a2.text(0.5, 0.5, "no delay histogram", ha="center", va="center", transform=a2.transAxes)
    save(fig, "regret.png")
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `rtcore run`")
    parser.add_argument("--json", action="store_true", help="print the run's summary as one JSON line")


def main(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    try:
        check_run_dir(run_dir)
    except OPTION_ERRORS as exc:
        return bad_option("rtcore report", exc)
    paths = draw(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if args.json:
        print(json.dumps({**summary, "plots": [str(p) for p in paths]}))
        return 0
    keys = ("env", "model", "mode", "env_steps", "inaction_fraction", "delay_mean", "delay_p99", "action_interval_mean",
            "action_interval_target", "tau_theta_max", "workers", "learners", "learner_updates", "param_version",
            "episodes", "mean_return")
    for k in keys:
        if k in summary:
            print(f"{k:24s} {summary[k]}")
    for p in paths:
        print(f"plot: {p}")
    return 0
