"""One game instance on its node: a Ray actor that runs the local machinery of ``rtcore run`` there.

An :class:`EnvNode` owns a local run (:class:`rtcore.agent.runner._Runner`, with no learners): the env
driver process, the ObsBoard and ActionBoard, the node's replay shard, its StaggerSchedule and (with
``--workers-on env``) its inference worker processes, all in the node's shared memory, set up, watched
(dead workers respawned and re-staggered), counted and shut down by the same code as on one machine.
So staggering keeps its meaning per node: one schedule per env node, spacing that node's workers over
its own env's steps. What the actor adds is the link to the rest of the cluster:

- a :class:`rtcore.cluster.params.ParamFollower` copies the learner group's newest parameter version
  into the node's ParamStore (the workers pick it up as in a local run);
- the node's shard is sampled by a :class:`rtcore.cluster.sampler.ShardSampler` next to it;
- with ``--workers-on gpu``, relay threads (:func:`rtcore.cluster.workers.relay_loop`) take the remote
  workers' turns in the node's schedule.

The actor is a plain (single-threaded) Ray actor: its methods run on its main thread, which also starts
the node's child processes, so they die with the actor (``PR_SET_PDEATHSIG`` follows that thread) when
its node is lost. Its metrics go to ``<run dir>/node-<i>/`` on the node's own disk.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EnvNode", "node_config"]

NODE_SEED_STRIDE = 104_729  # env node i explores with seed + i * this (the model starts the same everywhere)
CLUSTER_DEFAULTS = {"cluster": None, "env_nodes": 1, "workers_on": "env", "worker_gpus": 0.0, "learner_gpus": 0.0,
                    "cluster_placement": "spread", "env_node_cpus": 0}


def node_config(cfg: Any, run_dir: str) -> Any:
    """The local run an env node makes of the cluster run's config: no learners, no live view, its own
    directory, workers on ``cuda`` when they have a GPU share."""
    d = {**dataclasses.asdict(cfg), **CLUSTER_DEFAULTS}
    d.update(learners=0, run_dir=run_dir, quiet=True, json=False, resume=None, checkpoint_interval=0.0)
    if cfg.worker_gpus > 0 and cfg.workers_on == "env":
        d["device"] = "cuda"
    return type(cfg)(**d).validate()


class EnvNode:
    """Ray actor: env node ``index`` of the run (see the module docstring)."""

    def __init__(self, cfg: Any, index: int, run_dir: str) -> None:
        from rtcore.agent.runner import _Runner
        from rtcore.shared._shm import reclaim_dead_segments

        self.index = index
        self.reclaimed = len(reclaim_dead_segments())  # what a killed earlier run left on this node
        self.remote = cfg.workers_on == "gpu"
        self.worker_gpus = float(cfg.worker_gpus)
        self.r = r = _Runner(node_config(cfg, run_dir))
        r.seed = cfg.seed + NODE_SEED_STRIDE * index
        r.reclaimed_segments = self.reclaimed
        self.follower: Any = None
        self.relays: list[threading.Thread] = []
        self.relay_stats: Any = None
        self.loop: threading.Thread | None = None
        self._stop = threading.Event()
        self.ended: str | None = None
        self.last_row: dict[str, Any] = {}
        self.writer: Any = None

    # --- set-up (before the env starts)
    def setup(self) -> dict[str, Any]:
        """Measures the model, creates the node's shared objects and starts its local workers (not the env)."""
        import ray

        r = self.r
        r.measure()
        r.create_shared()
        if not self.remote:
            r.spawn()
            r.wait_ready()
        return {"obs_shape": list(r.obs_shape), "obs_dtype": r.obs_dtype.name, "n_actions": r.n_actions,
                "numel": int(r.numel), "tau_m": r.tau_m, "tau_theta_max": r.tau_theta_max, "n_star": r.n_star,
                "n_workers": r.n_workers, "latency": dict(r.latency), "replay": r.replay.name,
                "board": r.obs_board.name, "model_spec": r.model_spec,
                "node_id": ray.get_runtime_context().get_node_id()}

    def initial_params(self) -> tuple[np.ndarray, bytes, str]:
        """The model's initial flat parameters (the same on every node: one seed), its file and suffix."""
        with self.r.params.read() as (_, view):
            flat = view.copy()
        path = Path(self.r.model_path)
        return flat, path.read_bytes(), path.suffix

    def actor_config(self) -> dict[str, Any]:
        """What a remote worker needs to act as this node's workers would (model path set by the worker)."""
        r, cfg = self.r, self.r.cfg
        return {"model_path": "", "device": "cuda" if self.worker_gpus > 0 else "cpu", "backend": cfg.backend,
                "n_actions": r.n_actions, "epsilon_start": cfg.epsilon_start, "epsilon_end": cfg.epsilon_end,
                "epsilon_decay_steps": cfg.epsilon_decay_steps, "inference_delay": cfg.inference_delay,
                "seed": r.seed + 1, "action_history": cfg.action_history}

    # --- the run
    def start(self, group: Any, version0: int, remote_workers: list[Any]) -> float:
        """Starts the relays (remote workers), the env (the run's clock) and the parameter follower; returns
        the wall time of the env's first frame."""
        from rtcore.agent.metrics import MetricsWriter
        from rtcore.cluster.params import ParamFollower
        from rtcore.cluster.workers import RelayStats, relay_loop

        r = self.r
        if self.remote:
            self.relay_stats = RelayStats()
            for w, handle in enumerate(remote_workers[: r.n_workers]):
                t = threading.Thread(target=relay_loop, name=f"rtcore-relay-{w}", daemon=True,
                                     args=(w, handle, r, self.relay_stats, self._stop.is_set, r.fault))
                t.start()
                self.relays.append(t)
            r.n_workers = len(self.relays)
        if group is not None:
            self.follower = ParamFollower(group, r.params, version0).start()
        self.writer = MetricsWriter(r.run_dir, tensorboard=False)
        r.start_env()
        r.t_env0 = time.monotonic()
        r.write_processes()
        self.loop = threading.Thread(target=self._supervise, name="rtcore-env-node", daemon=True)
        self.loop.start()
        return time.time()

    def _supervise(self) -> None:
        """The local runner's watch loop, minus the end of the run (the cluster runner decides that)."""
        from rtcore.agent.telemetry import PostIntervals

        r, cfg = self.r, self.r.cfg
        intervals = PostIntervals(r.telemetry)
        next_row = time.monotonic() + cfg.metrics_interval
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if not r.driver.alive:
                    err = getattr(r.driver, "error", None)
                    r.env_error = str(err) if err else "the env driver exited"
                    r.stopped_by = self.ended = "env"
                    return
                if not self.remote and r.check_children(intervals):
                    self.ended = r.stopped_by
                    return
                if self.follower is not None and self.follower.lost and not getattr(self, "_said_lost", False):
                    self._said_lost = True
                    r.fault(self.follower.lost)
                r.apply_delay_schedule(now)
                if r.elastic and not self.remote:
                    r.resize_workers(now, intervals)
                if now >= next_row:
                    row = r.accounting.row(r, intervals)
                    self.writer.write(row)
                    self.last_row = row
                    next_row += cfg.metrics_interval
                if self.remote and self.relays and not any(t.is_alive() for t in self.relays):
                    r.fault("no remote worker left on this env node; it stops acting")
                    self.ended = r.stopped_by = "workers"
                    return
                self._stop.wait(min(0.05, max(0.0, next_row - time.monotonic())))
        except Exception as exc:  # said in the status; the node stops acting
            self.ended = r.stopped_by = "error"
            r.fault(f"env node {self.index} failed: {type(exc).__name__}: {exc}")

    def status(self) -> dict[str, Any]:
        """The node's newest metrics row, parameter following, faults and whether it has ended."""
        r = self.r
        return {"row": dict(self.last_row), "follow": self.follower.stats() if self.follower else {},
                "faults": list(r.faults), "ended": self.ended, "relay": self._relay_summary()}

    def _relay_summary(self) -> dict[str, Any]:
        s = self.relay_stats
        if s is None or not s.round_trip:
            return {}
        rt, net = np.asarray(s.round_trip[-100_000:]), np.asarray(s.network[-100_000:])
        return {"round_trips": int(len(s.round_trip)), "round_trip_ms_p50": float(np.median(rt) * 1e3),
                "round_trip_ms_p99": float(np.quantile(rt, 0.99) * 1e3), "network_ms_p50": float(np.median(net) * 1e3),
                "network_ms_p99": float(np.quantile(net, 0.99) * 1e3), "workers_lost": list(s.lost)}

    def stop(self) -> dict[str, Any]:
        """Ends the node's run: stops everything, returns its summary (``RunSummary.to_dict()``, with the
        cluster's figures in ``extra``), unlinks every segment."""
        from rtcore.agent.telemetry import WorkerCol

        r = self.r
        self._stop.set()
        try:
            r.t_stop = time.monotonic()
            if self.loop is not None:
                self.loop.join(10.0)
            if self.follower is not None:
                self.follower.stop()
            r.stop_all()
            for t in self.relays:
                t.join(5.0)
            if r.driver is None:
                return {}
            wall = r.t_stop - r.t_env0
            s = r.accounting.summary(r, wall).to_dict()
            picked = int(r.telemetry.workers[:, WorkerCol.VERSION].max()) if r.n_workers else 0
            glob = picked if self.remote else (self.follower.global_of.get(picked, -1) if self.follower else -1)
            s["extra"].update(node=self.index, params_follow=self.follower.stats() if self.follower else {},
                              global_version_picked_up=glob, relay=self._relay_summary(),
                              ended=self.ended or "time")
            return s
        finally:
            if self.writer is not None:
                self.writer.close()
            r.close_shared()

    def ping(self) -> bool:
        return True

