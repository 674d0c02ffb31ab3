"""What a run measures, where it is kept while the run goes, and where it is written.

Three parts:

- :class:`Telemetry`: counters in shared memory that the inference workers and learners write (each
  process its own row, one writer per cell, plain 8-byte stores) and the runner reads once per metrics
  interval. Nothing here is on a lock or a queue: a worker's hot loop adds to its own row. Each worker
  also keeps a ring of the wall-clock times at which it posted actions, from which the runner rebuilds
  the action intervals (their histogram against the schedule's target is one of the run's plots).
- :class:`MetricsWriter`: one row per interval to ``metrics.csv`` (always) and TensorBoard event files
  (when ``tensorboard`` is installed).
- :class:`LiveView`: the rich terminal view of a run (off when stdout is not a terminal or ``--quiet``).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "Telemetry",
    "WorkerCol",
    "LearnerCol",
    "Control",
    "MetricsWriter",
    "LiveView",
    "METRIC_COLUMNS",
    "histogram_quantile",
]


class WorkerCol:
    """Columns of a worker's row in ``Telemetry.workers`` (float64)."""

    HEARTBEAT = 0    # time.monotonic() of the worker's last sign of life
    PID = 1
    STARTS = 2       # processes that have run in this slot (1 + respawns)
    TURNS = 3        # turns taken (= actions posted)
    READ_S = 4       # seconds reading the ObsBoard (sum)
    INFER_S = 5      # seconds in forward passes, emulated delay included (sum)
    POST_S = 6       # seconds posting to the ActionBoard (sum)
    WAIT_S = 7       # seconds waiting for a turn or for the publish time (sum)
    PICKUP_S = 8     # seconds picking up new parameter versions (sum)
    INFER_MAX = 9    # longest forward pass seen
    VERSION = 10     # parameter version of the last action
    PICKUPS = 11     # parameter versions picked up
    RANDOM = 12      # epsilon-greedy random actions
    EPSILON = 13     # epsilon of the last action
    LAST_STEP = 14   # env step of the observation of the last action
    POSTS = 15       # entries written to this worker's post-time ring (monotonic)
    COUNT = 16


class LearnerCol:
    """Columns of a learner's row in ``Telemetry.learners`` (float64)."""

    HEARTBEAT = 0
    PID = 1
    STARTS = 2
    UPDATES = 3      # updates this slot applied
    SAMPLE_S = 4     # seconds sampling the replay buffer (sum)
    GRAD_S = 5       # seconds computing gradients (forward + backward, sum)
    WAIT_S = 6       # seconds waiting for the round-robin turn (sum)
    APPLY_S = 7      # seconds applying the update and publishing (sum)
    LOSS = 8         # loss of the last update
    Q_MEAN = 9       # mean Q(s, a) of the last batch
    GRAD_NORM = 10   # gradient norm of the last update (before clipping)
    VERSION = 11     # parameter version this learner last published
    STALENESS = 12   # versions published between this learner's snapshot and its update (sum)
    READY = 13       # 1 once the process has built its model and run a warm-up gradient
    COUNT = 14


class Control:
    """Slots of ``Telemetry.control`` (int64): run-wide flags and counters."""

    STOP = 0            # set to 1 by the runner: every child leaves its loop
    UPDATES = 1         # updates applied by all learners (written by the turn holder only)
    TARGET_VERSION = 2  # bumped each time the shared target network is refreshed
    OPT_STEP = 3        # Adam's step count (written by the turn holder only)
    COUNT = 8


class Telemetry:
    """Shared counters of one run: rows for ``max_workers`` workers and ``max_learners`` learners.

    Pickles as the names of its arrays; a spawned child gets an attached copy.
    """

    RING = 4096  # post times kept per worker; the runner reads them every metrics interval

    def __init__(self, max_workers: int, max_learners: int, *, _arrays: tuple | None = None) -> None:
        from rtcore.shared_array import SharedArray

        if _arrays is None:
            if max_workers < 1 or max_learners < 0:
                raise ValueError(f"need max_workers >= 1 and max_learners >= 0, got {max_workers}, {max_learners}")
            _arrays = (
                SharedArray((max_workers, WorkerCol.COUNT), "float64"),
                SharedArray((max(1, max_learners), LearnerCol.COUNT), "float64"),
                SharedArray((max_workers, self.RING), "float64"),
                SharedArray((Control.COUNT,), "int64"),
            )
        self._arrays = _arrays
        self.workers: np.ndarray = _arrays[0].array
        self.learners: np.ndarray = _arrays[1].array
        self.post_times: np.ndarray = _arrays[2].array
        self.control: np.ndarray = _arrays[3].array

    def __reduce__(self):
        return (_attach_telemetry, (self._arrays,))

    def close(self) -> None:
        for a in self._arrays:
            a.close()

    # --- written by children
    @property
    def stopping(self) -> bool:
        return bool(self.control[Control.STOP])

    def record_post(self, worker: int, t: float) -> None:
        """Worker ``worker`` posted an action at monotonic time ``t`` (one writer per row)."""
        row = self.workers[worker]
        k = int(row[WorkerCol.POSTS])
        self.post_times[worker, k % self.RING] = t
        row[WorkerCol.POSTS] = k + 1  # written after the time: a reader that sees k+1 sees the time


class PostIntervals:
    """Rebuilds action intervals from the workers' post-time rings, incrementally (runner side)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry
        self._seen = np.zeros(telemetry.workers.shape[0], dtype=np.int64)
        self._last: float | None = None

    def collect(self) -> np.ndarray:
        """Intervals (seconds) between consecutive posts since the last call, across all workers."""
        times: list[np.ndarray] = []
        ring = Telemetry.RING
        for w in range(self._t.workers.shape[0]):
            n = int(self._t.workers[w, WorkerCol.POSTS])
            start = max(int(self._seen[w]), n - ring)
            if n > start:
                idx = np.arange(start, n) % ring
                times.append(self._t.post_times[w, idx].copy())
            self._seen[w] = n
        if not times:
            return np.empty(0)
        t = np.sort(np.concatenate(times))
        if self._last is not None:
            t = np.concatenate(([self._last], t[t >= self._last]))
        self._last = float(t[-1])
        return np.diff(t)

    def reset_worker(self, w: int) -> None:
        """A respawned worker starts its ring from 0 again."""
        self._seen[w] = 0


def _attach_telemetry(arrays: tuple) -> Telemetry:
    return Telemetry(0, 0, _arrays=arrays)


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
    """Appends rows to ``run_dir/metrics.csv`` and, when available, TensorBoard event files."""

    def __init__(self, run_dir: str | os.PathLike[str], tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self._file = open(self.path, "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
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


def window_mean(total_now: float, total_before: float, count_now: float, count_before: float) -> float:
    """Mean over an interval from two running sums and two running counts (NaN when nothing happened)."""
    dc = count_now - count_before
    return (total_now - total_before) / dc if dc > 0 else math.nan


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def now() -> float:
    return time.monotonic()
