"""The cluster run's figures: one row per metrics interval over all env nodes, and the summary.

A run's summary is the local :class:`rtcore.agent.accounting.RunSummary`, summed or weighted over the env
nodes: steps, episodes, actions and faults add up; inaction, delay mean, action intervals and mean
return are weighted by each node's steps (episodes for the return); the delay percentiles and lateness
are the worst node's. A node lost mid-run counts with its last metrics row (what it did until then).
Each node's own summary, the parameter broadcast and the replay-batch figures are in
``extra["cluster"]``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


from rtcore.agent.accounting import RunSummary

__all__ = ["ClusterMetrics", "cluster_summary", "ROW_COLUMNS"]

ROW_COLUMNS = ("time_s", "env_steps", "steps_per_s", "inaction_window", "delay_window", "live_env_nodes",
               "learner_updates", "updates_per_s", "param_version", "node_version_min", "param_fetch_ms_p50",
               "param_age_ms_p50", "mean_return", "episodes")


def _weighted(values: list[float], weights: list[float]) -> float:
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None and math.isfinite(v) and w > 0]
    if not pairs:
        return math.nan
    return float(sum(v * w for v, w in pairs) / sum(w for _, w in pairs))


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else math.nan


class ClusterMetrics:
    """``<run dir>/cluster_metrics.csv``: one row per interval, over the env nodes' newest rows."""

    def __init__(self, run_dir: Path) -> None:
        self._file = open(Path(run_dir) / "cluster_metrics.csv", "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=list(ROW_COLUMNS), extrasaction="ignore")
        self._csv.writeheader()
        self.prev: dict[str, float] = {}

    def row(self, t: float, node_rows: dict[int, dict], follows: dict[int, dict], live: int,
            group: dict | None) -> dict[str, Any]:
        rows = [r for r in node_rows.values() if r]
        steps = [float(r.get("env_steps") or 0) for r in rows]
        total = float(sum(steps))
        updates = int(group["updates"]) if group else int(self.prev.get("updates", 0))
        dt = t - self.prev.get("t", 0.0)
        versions = [f.get("global_version", -1) for f in follows.values() if f]
        out = {
            "time_s": t, "env_steps": int(total),
            "steps_per_s": (total - self.prev.get("steps", 0.0)) / dt if dt > 0 else math.nan,
            "inaction_window": _weighted([_num(r.get("inaction_window")) for r in rows],
                                         [_num(r.get("steps_per_s")) for r in rows]),
            "delay_window": _weighted([_num(r.get("delay_window")) for r in rows],
                                      [_num(r.get("steps_per_s")) for r in rows]),
            "live_env_nodes": live, "learner_updates": updates,
            "updates_per_s": (updates - self.prev.get("updates", 0)) / dt if dt > 0 else math.nan,
            "param_version": int(group["version"]) if group else -1,
            "node_version_min": min(versions) if versions else -1,
            "param_fetch_ms_p50": max((_num(f.get("fetch_ms_p50")) for f in follows.values() if f), default=math.nan),
            "param_age_ms_p50": max((_num(f.get("age_ms_p50")) for f in follows.values() if f), default=math.nan),
            "mean_return": _weighted([_num(r.get("mean_return")) for r in rows],
                                     [float(r.get("episodes") or 0) for r in rows]),
            "episodes": int(sum(int(r.get("episodes") or 0) for r in rows)),
        }
        self.prev.update(t=t, steps=total, updates=updates)
        self._csv.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()})
        self._file.flush()
        return out

    def close(self) -> None:
        self._file.close()


def _from_row(i: int, row: dict[str, Any], faults: list[str]) -> dict[str, Any]:
    """What a lost node's last metrics row says, in the shape of a node summary."""
    return {"env_steps": int(row.get("env_steps") or 0), "inaction_fraction": _num(row.get("inaction_fraction")),
            "inaction_fraction_steady": math.nan, "delay_mean": _num(row.get("delay_mean")),
            "delay_p50": _num(row.get("delay_p50")), "delay_p99": _num(row.get("delay_p99")),
            "action_interval_mean": _num(row.get("action_interval_mean")),
            "action_interval_target": _num(row.get("action_interval_target")), "action_interval_cv": math.nan,
            "workers": int(row.get("live_workers") or 0), "episodes": int(row.get("episodes") or 0),
            "mean_return": _num(row.get("mean_return")), "actions_posted": int(row.get("actions_posted") or 0),
            "worker_restarts": int(row.get("worker_restarts") or 0), "lateness_p99_us": _num(row.get("lateness_p99_us")),
            "overruns": int(row.get("overruns") or 0), "faults": list(faults), "workers_lost": 0, "stalls": 0,
            "reclaimed_segments": 0, "env_error": None, "lost": True,
            "extra": {"node": i, "global_version_picked_up": -1, "ended": "lost"}}


def cluster_summary(run: Any, wall: float) -> RunSummary:
    """The run's :class:`RunSummary` from its env nodes' summaries (or last rows) and the learner group."""
    cfg, info = run.cfg, run.info
    nodes: dict[int, dict[str, Any]] = {}
    for i in range(cfg.env_nodes):
        s = run.node_summaries.get(i)
        nodes[i] = s if s else _from_row(i, run.node_rows.get(i, {}), run.node_faults.get(i, []))
    ss = list(nodes.values())
    steps = [float(s["env_steps"]) for s in ss]

    def w(key: str, weights: list[float] | None = None) -> float:
        return _weighted([_num(s.get(key)) for s in ss], weights or steps)

    def worst(key: str) -> float:
        vals = [_num(s.get(key)) for s in ss if math.isfinite(_num(s.get(key)))]
        return max(vals) if vals else math.nan

    episodes = [float(s.get("episodes") or 0) for s in ss]
    faults = list(run.faults)
    for i, s in nodes.items():
        faults += [f"env node {i}: {f}" for f in s.get("faults", [])]
    env_errors = [f"env node {i}: {s['env_error']}" for i, s in nodes.items() if s.get("env_error")]
    group = run.group_status or {}
    updates = int(group.get("updates", 0))
    picked = [int(s.get("extra", {}).get("global_version_picked_up", -1)) for s in ss]
    lost_nodes = sorted(i for i, s in nodes.items() if s.get("lost"))
    cluster = {
        "address": run.address, "env_nodes": cfg.env_nodes, "env_nodes_lost": lost_nodes,
        "learner_group_lost": run.group_lost, "learners_lost": sorted(run.learners_lost),
        "placement": cfg.cluster_placement, "workers_on": cfg.workers_on,
        "node_ids": {i: run.infos[i].get("node_id") for i in run.infos},
        "learner_node_id": run.learner_node_id,
        "param_put_ms_p50": group.get("param_put_ms_p50"), "versions_put": group.get("versions_put"),
        "learners": run.learner_results,
        "nodes": {i: {"env_steps": s["env_steps"], "inaction_fraction": s.get("inaction_fraction"),
                      "delay_mean": s.get("delay_mean"), "episodes": s.get("episodes"),
                      "mean_return": s.get("mean_return"), "ended": s.get("extra", {}).get("ended"),
                      "global_version_picked_up": s.get("extra", {}).get("global_version_picked_up"),
                      "params_follow": s.get("extra", {}).get("params_follow"),
                      "relay": s.get("extra", {}).get("relay")} for i, s in nodes.items()},
    }
    lat = info.get("latency", {})
    return RunSummary(
        run_dir=str(run.run_dir), env=cfg.env, model=cfg.model_spec(), mode=cfg.mode, seconds=wall,
        env_steps=int(sum(steps)), inaction_fraction=w("inaction_fraction"),
        inaction_fraction_steady=w("inaction_fraction_steady"), delay_mean=w("delay_mean"),
        delay_p50=worst("delay_p50"), delay_p99=worst("delay_p99"), action_interval_mean=w("action_interval_mean"),
        action_interval_target=w("action_interval_target"), action_interval_cv=worst("action_interval_cv"),
        tau_m=float(info.get("tau_m", math.nan)), tau_theta_max=float(info.get("tau_theta_max", math.nan)),
        tau_theta_measured_p50=float(lat.get("p50", math.nan)), tau_theta_measured_p99=float(lat.get("p99", math.nan)),
        inference_delay=cfg.inference_delay, n_star=int(info.get("n_star", 0)),
        workers=int(sum(int(s.get("workers") or 0) for s in ss)), learners=run.n_learners,
        learner_updates=updates, updates_per_s=updates / wall if wall > 0 else math.nan,
        param_version=int(group.get("version", -1)), worker_versions_picked_up=max(picked, default=-1),
        episodes=int(sum(episodes)), mean_return=w("mean_return", episodes),
        actions_posted=int(sum(int(s.get("actions_posted") or 0) for s in ss)),
        worker_restarts=int(sum(int(s.get("worker_restarts") or 0) for s in ss)), learner_restarts=run.learner_restarts,
        lateness_p99_us=worst("lateness_p99_us"), overruns=int(sum(int(s.get("overruns") or 0) for s in ss)),
        stopped_by=run.stopped_by, env_error="; ".join(env_errors) or None, faults=faults,
        workers_lost=int(sum(int(s.get("workers_lost") or 0) for s in ss)), learners_lost=len(run.learners_lost),
        stalls=int(sum(int(s.get("stalls") or 0) for s in ss)),
        reclaimed_segments=int(sum(int(s.get("reclaimed_segments") or 0) for s in ss)),
        extra={"cluster": cluster, "params": int(info.get("numel", 0)),
               "final_params": str(run.final_params_path) if run.final_params_path else None},
    )


def print_cluster(s: RunSummary) -> None:
    """The cluster's part of a summary, after :func:`rtcore.agent.accounting.print_summary`: one line per
    env node, the learners and what was lost."""
    from rich.console import Console
    from rich.table import Table

    c = s.extra.get("cluster") or {}
    t = Table(title=f"cluster ({c.get('address')}, {c.get('placement')}, workers on {c.get('workers_on')})")
    for col in ("env node", "steps", "inaction", "delay mean", "versions in", "fetch / age p50", "ended"):
        t.add_column(col, justify="right")
    for i, n in sorted((c.get("nodes") or {}).items(), key=lambda kv: int(kv[0])):
        f = n.get("params_follow") or {}
        inaction = n.get("inaction_fraction")
        delay = n.get("delay_mean")
        t.add_row(str(i), f"{n.get('env_steps', 0):,}",
                  f"{inaction:.2%}" if isinstance(inaction, float) and math.isfinite(inaction) else "-",
                  f"{delay:.2f}" if isinstance(delay, float) and math.isfinite(delay) else "-",
                  str(f.get("versions_received", "-")),
                  f"{_num(f.get('fetch_ms_p50')):.1f} / {_num(f.get('age_ms_p50')):.1f} ms" if f else "-",
                  str(n.get("ended")))
    Console().print(t)
    lost = c.get("env_nodes_lost") or []
    print(f"learners: {s.learners} ({s.learner_updates:,} updates, parameter versions put: {c.get('versions_put')}, "
          f"put p50 {_num(c.get('param_put_ms_p50')):.1f} ms); env nodes lost: {lost or 'none'}; learner group lost: "
          f"{c.get('learner_group_lost')}")
