"""What a run counts: one metrics row per interval (CSV, TensorBoard, the live view) and the summary.

:class:`RunAccounting` reads the run's shared counters (the env driver's stats, the telemetry arrays,
the parameter store, the schedule) through the runner that owns them; it keeps only what it needs to
turn running sums into per-interval figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rtcore.agent.telemetry import Control, LearnerCol, PostIntervals, WorkerCol

__all__ = ["RunSummary", "RunAccounting", "print_summary"]


@dataclass
class RunSummary:
    """What a run did. ``rtcore run --json`` prints ``to_dict()``."""

    run_dir: str
    env: str
    model: str
    mode: str
    seconds: float
    env_steps: int
    inaction_fraction: float
    inaction_fraction_steady: float
    delay_mean: float
    delay_p50: float
    delay_p99: float
    action_interval_mean: float
    action_interval_target: float
    action_interval_cv: float
    tau_m: float
    tau_theta_max: float
    tau_theta_measured_p50: float
    tau_theta_measured_p99: float
    inference_delay: float
    n_star: int
    workers: int
    learners: int
    learner_updates: int
    updates_per_s: float
    param_version: int
    worker_versions_picked_up: int
    episodes: int
    mean_return: float
    actions_posted: int
    worker_restarts: int
    learner_restarts: int
    lateness_p99_us: float
    overruns: int
    stopped_by: str
    env_error: str | None = None
    # faults the run lived through, in order (a child's death, respawned or not; stalled passes), and
    # what they cost: workers/learners lost for good (--no-respawn), passes taken as stalls, segments
    # of dead earlier runs reclaimed at the start
    faults: list[str] = field(default_factory=list)
    workers_lost: int = 0
    learners_lost: int = 0
    stalls: int = 0
    reclaimed_segments: int = 0
    # optimizer steps a learner died in (rtcore.agent.optim): rolled back before their commit, or
    # completed by the next turn holder after it; never half applied
    steps_rolled_back: int = 0
    steps_completed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN, e.g. a mean return before any episode ended, becomes None)."""
        return _json_clean(asdict(self))


def _json_clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _field(obj: Any, name: str, default: Any = math.nan) -> Any:
    v = getattr(obj, name, default)
    return default if v is None else v


class RunAccounting:
    """Metrics rows and the summary of one run (``r``: the runner, read-only)."""

    def __init__(self) -> None:
        self.prev: dict[str, Any] = {}
        self.all_intervals: list[np.ndarray] = []
        self.step_log: list[tuple[float, int, int]] = []  # (seconds since the env started, steps, default steps)

    def row(self, r: Any, intervals: PostIntervals) -> dict[str, Any]:
        cfg = r.cfg
        st = r.driver.stats
        tel = r.telemetry
        now = time.monotonic()
        t = now - r.t_env0
        steps = int(_field(st, "steps", 0))
        default_steps = int(_field(st, "default_steps", 0))
        hist = np.asarray(_field(st, "delay_hist", []), dtype=np.float64)
        w = tel.workers
        L = tel.learners
        turns = float(w[:, WorkerCol.TURNS].sum())
        infer = float(w[:, WorkerCol.INFER_S].sum())
        read = float(w[:, WorkerCol.READ_S].sum())
        post = float(w[:, WorkerCol.POST_S].sum())
        updates = int(tel.control[Control.UPDATES])
        version = int(r.params.version)
        ivals = intervals.collect()
        if ivals.size:
            self.all_intervals.append(ivals)
        dt = t - self.prev.get("t", 0.0)
        d_steps = steps - self.prev.get("steps", 0)
        returns = list(_field(st, "episode_returns", []) or [])
        hist_prev = self.prev.get("hist")
        delay_window = math.nan
        if hist.size:
            dh = hist - (hist_prev if isinstance(hist_prev, np.ndarray) and hist_prev.shape == hist.shape else 0)
            if dh.sum() > 0:
                delay_window = float((dh * np.arange(dh.size)).sum() / dh.sum())
        live = r.schedule.live_workers if r.schedule is not None else 1
        target = (r.schedule.action_interval if r.schedule is not None else r.tau_m)
        acting = w[w[:, WorkerCol.TURNS] > 0]  # rows of workers that have acted (elastic N keeps spare rows)
        last_versions = acting[:, WorkerCol.VERSION]
        lag = float(np.mean(np.maximum(0, version - last_versions))) if last_versions.size else math.nan
        n_l = max(1, r.n_learners)
        row = {
            "time_s": r.time_offset + t,
            "env_steps": r.step_offset + steps,
            "steps_per_s": d_steps / dt if dt > 0 else math.nan,
            "inaction_fraction": default_steps / steps if steps else math.nan,
            "inaction_window": ((default_steps - self.prev.get("default", 0)) / d_steps) if d_steps > 0 else math.nan,
            "delay_mean": float(_field(st, "delay_mean")),
            "delay_p50": float(_field(st, "delay_p50")),
            "delay_p99": float(_field(st, "delay_p99")),
            "delay_window": delay_window,
            "action_interval_mean": float(ivals.mean()) if ivals.size else math.nan,
            "action_interval_target": float(target),
            "tau_m": r.tau_m,
            "tau_max": float(r.schedule.tau_max) if r.schedule is not None else r.tau_theta_max,
            "tau_mean": float(r.schedule.mean_tau) if r.schedule is not None else math.nan,
            "live_workers": live,
            "infer_ms": 1e3 * (infer - self.prev.get("infer", 0)) / max(1, turns - self.prev.get("turns", 0)),
            "read_us": 1e6 * (read - self.prev.get("read", 0)) / max(1, turns - self.prev.get("turns", 0)),
            "post_us": 1e6 * (post - self.prev.get("post", 0)) / max(1, turns - self.prev.get("turns", 0)),
            "inference_delay": float(tel.control[Control.INFERENCE_DELAY_NS]) * 1e-9,
            "param_publishes_skipped": int(r.params.stats()["skipped_no_buffer"]),
            "actions_posted": int(_field(r.action_board, "posted", 0)),
            "actions_superseded": int(_field(r.action_board, "superseded", 0)),
            "epsilon": float(acting[:, WorkerCol.EPSILON].min()) if acting.size else cfg.epsilon_start,
            "learner_updates": updates,
            "updates_per_s": (updates - self.prev.get("updates", 0)) / dt if dt > 0 else math.nan,
            "param_version": version,
            "worker_version_lag": lag,
            "loss": float(np.mean(L[:n_l, LearnerCol.LOSS])) if updates else math.nan,
            "q_mean": float(np.mean(L[:n_l, LearnerCol.Q_MEAN])) if updates else math.nan,
            "replay_size": len(r.replay),
            "episodes": int(_field(st, "episodes", 0)),
            "episode_return": float(returns[-1]) if returns else math.nan,
            "mean_return": float(np.mean(returns[-100:])) if returns else math.nan,
            "lateness_p99_us": 1e6 * float(_field(st, "lateness_p99")),
            "overruns": int(_field(st, "overruns", 0)),
            "worker_restarts": sum(c.restarts for c in r.children if c.kind == "worker"),
            "learner_restarts": sum(c.restarts for c in r.children if c.kind == "learner"),
        }
        n_upd = float(L[:, LearnerCol.UPDATES].sum())
        d_upd = n_upd - self.prev.get("n_upd", 0.0)
        for col, key in ((LearnerCol.SAMPLE_S, "learner_sample_ms"), (LearnerCol.GRAD_S, "learner_grad_ms"),
                         (LearnerCol.WAIT_S, "learner_wait_ms"), (LearnerCol.APPLY_S, "learner_apply_ms")):
            total = float(L[:, col].sum())
            row[key] = 1e3 * (total - self.prev.get(key, 0.0)) / d_upd if d_upd > 0 else math.nan
            self.prev[key] = total
        row["learner_staleness"] = float(L[:, LearnerCol.STALENESS].sum() / n_upd) if n_upd else math.nan
        self.prev.update(t=t, steps=steps, default=default_steps, infer=infer, read=read, post=post, turns=turns,
                    updates=updates, hist=hist, n_upd=n_upd)
        self.step_log.append((t, steps, default_steps))
        return row

    def summary(self, r: Any, wall: float) -> RunSummary:
        cfg = r.cfg
        st = getattr(r, "final_stats", None)
        tel = r.telemetry
        steps = int(_field(st, "steps", 0))
        ivals = np.concatenate(self.all_intervals) if self.all_intervals else np.empty(0)
        np.save(r.run_dir / "action_intervals.npy", ivals)
        hist = np.asarray(_field(st, "delay_hist", []), dtype=np.float64)
        if hist.size:
            np.save(r.run_dir / "delay_histogram.npy", hist)
        updates = int(tel.control[Control.UPDATES])
        mean_iv = float(ivals.mean()) if ivals.size else math.nan
        return RunSummary(
            run_dir=str(r.run_dir),
            env=cfg.env,
            model=cfg.model_spec(),
            mode=cfg.mode,
            seconds=wall,
            env_steps=steps,
            inaction_fraction=float(_field(st, "inaction_fraction", math.nan)),
            inaction_fraction_steady=self._steady_inaction(r, st),
            delay_mean=float(_field(st, "delay_mean")),
            delay_p50=float(_field(st, "delay_p50")),
            delay_p99=float(_field(st, "delay_p99")),
            action_interval_mean=mean_iv,
            action_interval_target=getattr(r, "final_target", r.tau_m),
            action_interval_cv=float(ivals.std() / mean_iv) if ivals.size > 1 else math.nan,
            tau_m=r.tau_m,
            tau_theta_max=r.tau_theta_max,
            tau_theta_measured_p50=float(r.latency["p50"]),
            tau_theta_measured_p99=float(r.latency["p99"]),
            inference_delay=cfg.inference_delay,
            n_star=r.n_star,
            workers=getattr(r, "n_workers_initial", r.n_workers),
            learners=r.n_learners,
            learner_updates=updates,
            updates_per_s=updates / wall if wall > 0 else math.nan,
            param_version=int(r.params.version),
            worker_versions_picked_up=int(tel.workers[:, WorkerCol.VERSION].max()) if r.n_workers else 0,
            episodes=int(_field(st, "episodes", 0)),
            mean_return=float(_field(st, "mean_return")),
            actions_posted=int(tel.workers[:, WorkerCol.TURNS].sum()),
            worker_restarts=sum(c.restarts for c in r.children if c.kind == "worker"),
            learner_restarts=sum(c.restarts for c in r.children if c.kind == "learner"),
            lateness_p99_us=1e6 * float(_field(st, "lateness_p99")),
            overruns=int(_field(st, "overruns", 0)),
            stopped_by=r.stopped_by,
            env_error=r.env_error,
            faults=list(r.faults),
            workers_lost=sum(c.lost for c in r.children if c.kind == "worker"),
            learners_lost=sum(c.lost for c in r.children if c.kind == "learner"),
            stalls=int(getattr(r, "final_stalls", 0)),
            reclaimed_segments=int(getattr(r, "reclaimed_segments", 0)),
            steps_rolled_back=int(tel.control[Control.STEPS_ROLLED_BACK]),
            steps_completed=int(tel.control[Control.STEPS_COMPLETED]),
            extra={"learner_time_per_update_s": self._learner_time_per_update(r),
                   "act_time_mean_s": self._act_time(r),
                   **self._frozen(r),
                   "driver_cost_us": 1e6 * float(_field(st, "cost_mean")),
                   "reset_time_mean_s": float(_field(st, "reset_time_mean")),
                   "params": r.numel,
                   "param_buffers": r.params.buffers,
                   "param_readers": r.params.max_readers,
                   "param_publishes_skipped": int(r.params.stats()["skipped_no_buffer"]),
                   "workers_final": r.n_workers,
                   "workers_max": max(r.n_workers, getattr(r, "max_workers_seen", 0)),
                   "workers_spawned": getattr(r, "workers_spawned", 0),
                   "workers_retired": getattr(r, "workers_retired", 0),
                   "started_from": str(r.start_path) if r.start is not None else None,
                   "env_steps_before": r.step_offset, "seconds_before": r.time_offset},
        )

    def _steady_inaction(self, r: Any, st: Any) -> float:
        """Inaction after start-up: from the first metrics row at least ``max(1 s, 2 tau_theta_max)`` after
        the env's first frame (before that, the first actions are still being computed) to the end."""
        warm = max(1.0, 2 * r.tau_theta_max)
        start = next((r for r in self.step_log if r[0] >= warm), None)
        steps, default = int(_field(st, "steps", 0)), int(_field(st, "default_steps", 0))
        if start is None or steps <= start[1]:
            return math.nan
        return (default - start[2]) / (steps - start[1])

    def _act_time(self, r: Any) -> float:
        """Mean time of one action: parameter pick-up + board read + forward (+ emulated delay) + post."""
        w = r.telemetry.workers
        turns = w[:, WorkerCol.TURNS].sum()
        if turns <= 0:
            return math.nan
        busy = sum(w[:, c].sum() for c in (WorkerCol.PICKUP_S, WorkerCol.READ_S, WorkerCol.INFER_S, WorkerCol.POST_S))
        return float(busy / turns)

    def _frozen(self, r: Any) -> dict[str, float]:
        """Backend 'frozen': refreshes of the spare copies, their mean time, and the mean number of versions
        an action's parameters trailed the newest by (rtcore.models.frozen)."""
        if r.cfg.backend != "frozen":
            return {}
        w = r.telemetry.workers
        turns, n = w[:, WorkerCol.TURNS].sum(), w[:, WorkerCol.REFRESHES].sum()
        return {"frozen_refreshes": int(n),
                "frozen_refresh_s_mean": float(w[:, WorkerCol.REFRESH_S].sum() / n) if n > 0 else math.nan,
                "frozen_version_lag_mean": float(w[:, WorkerCol.VERSION_LAG].sum() / turns) if turns > 0 else math.nan}

    def _learner_time_per_update(self, r: Any) -> float:
        L = r.telemetry.learners
        n = L[:, LearnerCol.UPDATES].sum()
        if n <= 0:
            return math.nan
        busy = L[:, LearnerCol.SAMPLE_S].sum() + L[:, LearnerCol.GRAD_S].sum() + L[:, LearnerCol.APPLY_S].sum()
        return float(busy / n)



def print_summary(s: RunSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"rtcore run: {s.env} {s.model} ({s.mode}, stopped by {s.stopped_by})", show_header=False)
    t.add_column(style="cyan")
    t.add_column(justify="right")

    def ms(x: float) -> str:
        return f"{x * 1e3:.2f} ms" if math.isfinite(x) else "-"

    rows = [
        ("env steps", f"{s.env_steps:,} in {s.seconds:.1f} s"),
        ("inaction (all / after start-up)", f"{_pct(s.inaction_fraction)} / {_pct(s.inaction_fraction_steady)}"),
        ("delay mean / p50 / p99 (steps)", f"{s.delay_mean:.2f} / {s.delay_p50:.0f} / {s.delay_p99:.0f}"),
        ("action interval (mean / target)", f"{ms(s.action_interval_mean)} / {ms(s.action_interval_target)}"),
        ("tau_M / tau_theta_max", f"{ms(s.tau_m)} / {ms(s.tau_theta_max)} (emulated +{ms(s.inference_delay)})"),
        ("N* / workers / learners", f"{s.n_star} / {s.workers} / {s.learners}"),
        ("learner updates (per s)", f"{s.learner_updates:,} ({s.updates_per_s:.1f}/s)"),
        ("param version", f"{s.param_version:,}"),
        ("episodes / mean return", f"{s.episodes} / {s.mean_return:.2f}" if math.isfinite(s.mean_return) else f"{s.episodes} / -"),
        ("restarts (workers / learners)", f"{s.worker_restarts} / {s.learner_restarts}"),
        ("run dir", s.run_dir),
    ]
    if s.env_error:
        rows.append(("env error", s.env_error))
    if s.steps_rolled_back or s.steps_completed:
        rows.append(("optimizer steps interrupted (rolled back / completed)", f"{s.steps_rolled_back} / {s.steps_completed}"))
    if s.workers_lost or s.learners_lost:
        rows.append(("lost for good (workers / learners)", f"{s.workers_lost} / {s.learners_lost}"))
    if s.stalls:
        rows.append(("stalled passes (not inference times)", f"{s.stalls}"))
    for i, fault in enumerate(s.faults[:20]):
        rows.append(("fault" if i == 0 else "", fault))
    if len(s.faults) > 20:
        rows.append(("", f"... {len(s.faults) - 20} more in summary.json"))
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)


def _pct(x: float | None) -> str:
    return f"{x:.2%}" if x is not None and math.isfinite(x) else "-"


