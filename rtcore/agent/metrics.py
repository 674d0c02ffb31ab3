"""Where a run's metrics are written and shown (the counters themselves are in ``telemetry``).

- :class:`MetricsWriter`: one row per interval to ``metrics.csv`` (always) and TensorBoard event files
  (when ``tensorboard`` is installed).
- :class:`LiveView`: the rich terminal view of a run (off when stdout is not a terminal or ``--quiet``).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "MetricsWriter",
    "LiveView",
    "METRIC_COLUMNS",
    "histogram_quantile",
]


def histogram_quantile(counts: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram whose bin ``i`` counts the value ``i`` (last bin: >=)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return math.nan
    return float(np.searchsorted(np.cumsum(c), q * total, side="left"))


# ---------------------------------------------------------------------- writing
# Columns of metrics.csv, in order, with what each means (the report and the tests read these).
METRIC_COLUMNS: dict[str, str] = {
    "time_s": "seconds since the env started",
    "env_steps": "env steps taken",
    "steps_per_s": "env steps per second over the interval",
    "inaction_fraction": "default-action steps / steps, since the start",
    "inaction_window": "default-action steps / steps, over the interval",
    "delay_mean": "mean delay (env steps between an action's observation and its application), since the start",
    "delay_p50": "median delay in steps, since the start",
    "delay_p99": "99th percentile delay in steps, since the start",
    "delay_window": "mean delay in steps over the interval",
    "action_interval_mean": "mean seconds between posted actions over the interval",
    "action_interval_target": "the schedule's target interval tau_max / N_live (sequential: tau_M)",
    "tau_m": "env period in seconds",
    "tau_max": "the schedule's running maximum inference time",
    "tau_mean": "the schedule's mean inference time",
    "live_workers": "workers the schedule counts as alive",
    "infer_ms": "mean forward pass (emulated delay included) over the interval, ms",
    "read_us": "mean ObsBoard read over the interval, microseconds",
    "post_us": "mean ActionBoard post over the interval, microseconds",
    "inference_delay": "emulated extra seconds per forward pass (--inference-delay)",
    "actions_posted": "actions posted by all workers",
    "actions_superseded": "posted actions replaced by a newer one before the env took them",
    "epsilon": "exploration rate of the newest action",
    "learner_sample_ms": "mean replay sampling time per update over the interval, ms",
    "learner_grad_ms": "mean gradient (forward + backward) time per update over the interval, ms",
    "learner_wait_ms": "mean wait for the round-robin turn per update over the interval, ms",
    "learner_apply_ms": "mean apply + publish time per update over the interval, ms",
    "learner_staleness": "mean versions published between a gradient's snapshot and its application",
    "learner_updates": "updates applied by all learners",
    "updates_per_s": "learner updates per second over the interval",
    "param_version": "newest parameter version in the ParamStore",
    "worker_version_lag": "mean versions the workers' last actions were behind the newest",
    "loss": "mean Huber loss of the learners' last updates",
    "q_mean": "mean Q(s, a) of the learners' last batches",
    "replay_size": "transitions in the replay buffer",
    "episodes": "episodes finished",
    "episode_return": "return of the newest finished episode",
    "mean_return": "mean return of the last 100 episodes",
    "lateness_p99_us": "99th percentile tick lateness of the env timer, microseconds",
    "overruns": "env ticks that ran over their period",
    "worker_restarts": "inference workers respawned",
    "learner_restarts": "learners respawned",
}


class MetricsWriter:
    """Writes rows to ``run_dir/metrics.csv`` (``append``: after the rows already there, as a resumed run
    does) and, when available, TensorBoard event files."""

    def __init__(self, run_dir: str | os.PathLike[str], tensorboard: bool = True, append: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        header = not (append and self.path.is_file() and self.path.stat().st_size > 0)
        self._file = open(self.path, "a" if append else "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        if header:
            self._csv.writeheader()
        self._file.flush()
        self._tb = None
        self.tensorboard_error: str | None = None
        if tensorboard:
            self._tb = _open_tensorboard(Path(run_dir) / "tensorboard")
            if isinstance(self._tb, str):
                self.tensorboard_error, self._tb = self._tb, None
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        self._csv.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
        self._file.flush()
        if self._tb is not None:
            step = int(row.get("env_steps") or 0)
            for k, v in row.items():
                if k in ("time_s", "env_steps") or v is None:
                    continue
                try:
                    fv = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(fv):
                    self._tb.add_scalar(k, fv, global_step=step, walltime=None)
        self.rows += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return f"{v:.6g}"
    return "" if v is None else v


def _open_tensorboard(logdir: Path):
    """A SummaryWriter, or a string saying why there is none."""
    import warnings

    try:
        with warnings.catch_warnings():
            # tensorboard and its protobuf import emit deprecation noise on new Pythons; not ours to fix.
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=str(logdir))
    except Exception as exc:  # ImportError, or a broken tensorboard install
        return f"TensorBoard off: {type(exc).__name__}: {exc}"


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``metrics.csv`` of a run as column -> float array (empty cells are NaN)."""
    path = Path(run_dir) / "metrics.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    names = rows[0].keys() if rows else METRIC_COLUMNS.keys()
    for k in names:
        vals = []
        for r in rows:
            v = r.get(k, "")
            try:
                vals.append(float(v) if v != "" else math.nan)
            except ValueError:
                vals.append(math.nan)
        cols[k] = np.asarray(vals, dtype=np.float64)
    return cols


# ---------------------------------------------------------------------- live view
class LiveView:
    """The terminal view of a running run (rich). A no-op when disabled."""

    def __init__(self, enabled: bool, seconds: float, title: str) -> None:
        self.enabled = enabled and sys.stdout.isatty()
        self._live = None
        self._title = title
        self._seconds = seconds
        if not self.enabled:
            return
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                  TimeRemainingColumn())
        self._task = self._progress.add_task("run", total=seconds)
        self._live = Live(self._render({}), refresh_per_second=4, transient=False)
        self._live.start()

    def _render(self, row: dict[str, Any]):
        from rich.console import Group
        from rich.table import Table

        t = Table(title=self._title, show_header=False, box=None, pad_edge=False)
        t.add_column(style="cyan", no_wrap=True)
        t.add_column(justify="right")
        t.add_column(style="cyan", no_wrap=True)
        t.add_column(justify="right")

        def g(k: str, fmt: str = "{:.3g}", scale: float = 1.0) -> str:
            v = row.get(k)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return "-"
            return fmt.format(v * scale)

        t.add_row("env steps", g("env_steps", "{:,.0f}"), "steps/s", g("steps_per_s", "{:.1f}"))
        t.add_row("inaction", g("inaction_fraction", "{:.2%}"), "inaction (window)", g("inaction_window", "{:.2%}"))
        t.add_row("delay p50/p99", f"{g('delay_p50', '{:.0f}')} / {g('delay_p99', '{:.0f}')} steps", "delay mean",
                  g("delay_mean", "{:.2f}"))
        t.add_row("action interval", f"{g('action_interval_mean', '{:.1f}', 1e3)} ms", "target",
                  f"{g('action_interval_target', '{:.1f}', 1e3)} ms")
        t.add_row("tau_max", f"{g('tau_max', '{:.1f}', 1e3)} ms", "live workers", g("live_workers", "{:.0f}"))
        t.add_row("read / infer / post", f"{g('read_us', '{:.0f}')} us / {g('infer_ms', '{:.1f}')} ms / "
                  f"{g('post_us', '{:.0f}')} us", "emulated delay", f"{g('inference_delay', '{:.1f}', 1e3)} ms")
        t.add_row("learner updates", g("learner_updates", "{:,.0f}"), "updates/s", g("updates_per_s", "{:.1f}"))
        t.add_row("grad / turn wait / apply", f"{g('learner_grad_ms', '{:.0f}')} / {g('learner_wait_ms', '{:.0f}')} / "
                  f"{g('learner_apply_ms', '{:.1f}')} ms", "staleness", g("learner_staleness", "{:.2f}"))
        t.add_row("param version", g("param_version", "{:,.0f}"), "loss", g("loss", "{:.4f}"))
        t.add_row("episodes", g("episodes", "{:.0f}"), "return (last / mean100)",
                  f"{g('episode_return', '{:.1f}')} / {g('mean_return', '{:.1f}')}")
        t.add_row("epsilon", g("epsilon", "{:.3f}"), "replay", g("replay_size", "{:,.0f}"))
        return Group(t, self._progress)

    def update(self, row: dict[str, Any]) -> None:
        if self._live is None:
            return
        self._progress.update(self._task, completed=min(self._seconds, float(row.get("time_s") or 0.0)))
        self._live.update(self._render(row))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
