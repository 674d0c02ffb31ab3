"""``rtcore run --cluster ray[:ADDRESS]``: place the roles, start them, watch them, end the run.

1. Connects to Ray (a local instance on 127.0.0.1 for ``--cluster ray``) and reserves one placement
   group: a bundle per env node (``--env-node-cpus``, plus GPU shares for local GPU workers) and one for
   the learner group (``learner_threads`` CPUs and ``--learner-gpus`` per learner), placed with
   ``--cluster-placement``; remote workers (``--workers-on gpu``) get their own packed group.
2. Env nodes set up in parallel (model measured, shared objects, local workers), a sampler actor joins
   each node's bundle, the learner group starts from node 0's initial parameters (the same on every
   node: one seed) and its learners warm up; then every env node starts its env: the run's clock.
3. Every ``--metrics-interval``: each node's status (a row of ``cluster_metrics.csv``), the learners'
   progress. A node that stops answering (``RayActorError``: its raylet or process died) is written off
   and the run goes on with the others, as with a dead local worker under ``--no-respawn``; the run ends
   when no env node is left. A lost learner group leaves the env nodes acting on the last parameters.
   A learner stalled for half the turnstile's timeout is killed by the learner group's watchdog (as a
   local run's runner does, :mod:`rtcore.agent.stall`) and respawned here, in the group's bundle (with
   ``--no-respawn``: written off); both are faults of the run.
4. At the end (time, Ctrl-C, SIGTERM): the env nodes stop and send their summaries, the learners stop,
   the final parameters are saved (``checkpoints/final.params.npy``, flat float32 in the model's
   ``parameters()`` order), every actor and the placement group are removed, and segments that dead
   actors left on this machine are reclaimed.

``placement.json`` in the run directory says which Ray node each env node and the learner group run on,
and the pids of the learner processes on the learner node (rewritten when a learner is respawned).

Length: the driver is one sequence (place, start, supervise and respawn, stop, sum up) over one set of
actors and placement groups, which every step of it owns in turn; split, each part would reach into the
others' state.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtcore.agent.accounting import RunSummary
from rtcore.agent.config import RunConfig, make_run_dir
from rtcore.cluster._ray import PLACEMENT_STRATEGIES, bundle_strategy, connect, lost_errors
from rtcore.cluster.summary import ClusterMetrics, cluster_summary

__all__ = ["run_cluster", "PLACEMENT_TIMEOUT"]

PLACEMENT_TIMEOUT = 60.0  # seconds for the cluster to find room for the run's bundles
STARTUP_TIMEOUT = 180.0   # env nodes set up, learners warm up
STATUS_TIMEOUT = 20.0     # a node that does not answer a status call within this is written off
STOP_TIMEOUT = 30.0
GROUP_GPU_SHARE = 0.01    # of the learners' GPU, for the learner group that holds their shared state


class _Terminate(BaseException):
    pass


def env_bundle(cfg: RunConfig) -> dict[str, float]:
    """The resources of one env node's bundle."""
    fixed = cfg.fixed_workers or 1
    cpus = cfg.env_node_cpus or (1 if cfg.workers_on == "gpu" else 1 + fixed)
    b: dict[str, float] = {"CPU": float(cpus)}
    if cfg.workers_on == "env" and cfg.worker_gpus > 0:
        b["GPU"] = cfg.worker_gpus * fixed
    return b


def local_cpus(cfg: RunConfig) -> int:
    """Logical CPUs a local instance announces: what the run's bundles ask for (Ray's CPUs are bookkeeping,
    not cores; the processes share the machine's cores as in a local run)."""
    import os

    remote = cfg.env_nodes * (cfg.fixed_workers or 4) if cfg.workers_on == "gpu" else 0
    need = cfg.env_nodes * int(env_bundle(cfg)["CPU"]) + cfg.learners * cfg.learner_threads + remote
    return max(os.cpu_count() or 1, need)


class _ClusterRun:
    def __init__(self, cfg: RunConfig, ray: Any, address: str) -> None:
        self.cfg, self.ray, self.address = cfg, ray, address
        self.lost = lost_errors()
        self.run_dir = make_run_dir(cfg)
        self.n_learners = cfg.learners
        self.faults: list[str] = []
        self.stopped_by = "time"
        self.nodes: dict[int, Any] = {}
        self.live: set[int] = set()
        self.dead: set[int] = set()  # env nodes lost (their actor is gone)
        self.infos: dict[int, dict] = {}
        self.info: dict[str, Any] = {}
        self.node_rows: dict[int, dict] = {}
        self.node_follow: dict[int, dict] = {}
        self.node_faults: dict[int, list] = {}
        self.node_summaries: dict[int, dict] = {}
        self.samplers: list[Any] = []
        self.group: Any = None
        self.group_status: dict | None = None
        self.group_lost = False
        self.learners: list[Any] = []
        self.runs: dict[int, Any] = {}
        self.learners_lost: set[int] = set()
        self.learner_results: dict[int, Any] = {}
        self.learner_node_id: str | None = None
        self.learner_start: tuple[Any, bytes, list, dict] | None = None  # (pg, handles, shards, setup): respawns
        self.learner_pids: dict[int, int] = {}
        self.learner_restarts = 0
        self.respawned: dict[int, int] = {}  # learner -> respawns after the group's stall kills
        self.group_faults_seen = 0
        self.remote_workers: list[Any] = []
        self.pgs: list[Any] = []
        self.final_params_path: Path | None = None

    def log(self, msg: str) -> None:
        if not self.cfg.quiet and not self.cfg.json:
            print(msg, file=sys.stderr, flush=True)

    def fault(self, msg: str) -> None:
        self.faults.append(msg)
        self.log(f"rtcore: {msg}")

    # --- placement and start
    def env_bundle(self) -> dict[str, float]:
        return env_bundle(self.cfg)

    def place(self, bundles: list[dict[str, float]], strategy: str, what: str) -> Any:
        from ray.util.placement_group import placement_group

        pg = placement_group(bundles, strategy=strategy)
        self.pgs.append(pg)
        try:
            self.ray.get(pg.ready(), timeout=PLACEMENT_TIMEOUT)
        except self.ray.exceptions.GetTimeoutError:
            raise RuntimeError(f"the cluster has no room for the {what}: bundles {bundles} with strategy {strategy} "
                               f"not placed within {PLACEMENT_TIMEOUT:.0f} s; available: "
                               f"{self.ray.available_resources()}") from None
        return pg

    def start(self) -> None:
        from rtcore.cluster.envnode import EnvNode
        from rtcore.cluster.learners import LearnerGroup
        from rtcore.cluster.sampler import ShardSampler

        ray, cfg = self.ray, self.cfg
        E, M = cfg.env_nodes, self.n_learners
        env_b = self.env_bundle()
        bundles = [dict(env_b) for _ in range(E)]
        gpu_learners = cfg.learner_gpus > 0
        if M:
            lb: dict[str, float] = {"CPU": float(M * cfg.learner_threads)}
            if gpu_learners:
                lb["GPU"] = M * cfg.learner_gpus + GROUP_GPU_SHARE
            bundles.append(lb)
        pg = self.place(bundles, PLACEMENT_STRATEGIES[cfg.cluster_placement], "env nodes and learners")
        self.log(f"rtcore: cluster {self.address}: {E} env node(s), {M} learner(s) placed ({cfg.cluster_placement})")
        node_cls = ray.remote(EnvNode)
        for i in range(E):
            self.nodes[i] = node_cls.options(num_cpus=env_b["CPU"], num_gpus=env_b.get("GPU", 0), max_restarts=0,
                                             scheduling_strategy=bundle_strategy(pg, i)).remote(
                cfg, i, str(self.run_dir.resolve() / f"node-{i}"))  # the same absolute path on its node
        setups = {i: n.setup.remote() for i, n in self.nodes.items()}
        for i, ref in setups.items():
            self.infos[i] = ray.get(ref, timeout=STARTUP_TIMEOUT)
        self.live = set(self.nodes)
        self.info = self.infos[0]
        params0, model_bytes, suffix = ray.get(self.nodes[0].initial_params.remote(), timeout=STARTUP_TIMEOUT)
        sampler_cls = ray.remote(ShardSampler)
        shards = []
        for i in range(E):
            s = sampler_cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=bundle_strategy(pg, i)).remote(
                self.infos[i]["replay"], self.infos[i]["board"], cfg.seed + 31 * i)
            self.samplers.append(s)
            shards.append((i, s))
        version0 = -1
        if M:
            device = "cuda" if gpu_learners else (cfg.learner_device or "cpu")
            self.group = ray.remote(LearnerGroup).options(
                num_cpus=0, num_gpus=GROUP_GPU_SHARE if gpu_learners else 0, max_restarts=0,
                max_concurrency=4 * E + 8, scheduling_strategy=bundle_strategy(pg, E)).remote(
                params0, M, device, cfg.param_interval, cfg.heartbeat_timeout)
            handles = ray.get(self.group.handles.remote(), timeout=STARTUP_TIMEOUT)
            version0 = int(ray.get(self.group.status.remote(), timeout=STARTUP_TIMEOUT)["version"])
            setup = self.learner_setup(device)
            self.learner_start = (pg, handles, shards, setup)
            for j in range(M):
                self.start_learner(j)
            self.learner_node_id = ray.get(self.group_node_id(), timeout=STARTUP_TIMEOUT)
            self.wait_learners_ready()
        per_node: list[list[Any]] = [[] for _ in range(E)]
        if cfg.workers_on == "gpu":
            per_node = self.start_remote_workers(params0, version0, model_bytes, suffix)
        starts = [self.nodes[i].start.remote(self.group, version0, per_node[i]) for i in range(E)]
        ray.get(starts, timeout=STARTUP_TIMEOUT)
        self.write_placement()

    def write_placement(self) -> None:
        """``placement.json``: where each role runs, and the learners' pids on the learner node."""
        placement = {"address": self.address, "env_nodes": {i: self.infos[i]["node_id"] for i in sorted(self.infos)},
                     "learner_node": self.learner_node_id, "learner_pids": self.learner_pids}
        (self.run_dir / "placement.json").write_text(json.dumps(placement, indent=1) + "\n")

    def start_learner(self, j: int) -> None:
        """Starts learner ``j``'s actor in the learner group's bundle (at the start, and to respawn it)."""
        from rtcore.cluster.learners import Learner

        assert self.learner_start is not None
        pg, handles, shards, setup = self.learner_start
        a = self.ray.remote(Learner).options(
            num_cpus=self.cfg.learner_threads, num_gpus=self.cfg.learner_gpus, max_restarts=0,
            scheduling_strategy=bundle_strategy(pg, self.cfg.env_nodes)).remote()
        self.learners.append(a)
        self.runs[j] = a.run.remote(j, handles, shards, setup)

    def take_group_status(self, st: dict[str, Any]) -> None:
        """A status of the learner group: its new faults (stalled learners it killed) become the run's, and
        new learner pids go into ``placement.json``."""
        from rtcore.agent.telemetry import LearnerCol

        self.group_status = st
        faults = st.get("stall_faults", [])
        for msg in faults[self.group_faults_seen:]:
            self.fault(msg)
        self.group_faults_seen = len(faults)
        pids = {j: int(st["learners"][j, LearnerCol.PID]) for j in range(self.n_learners)
                if st["learners"][j, LearnerCol.PID] > 0}
        if pids != self.learner_pids and self.learner_node_id is not None:
            self.learner_pids = pids
            self.write_placement()

    def group_node_id(self) -> Any:
        @self.ray.remote(num_cpus=0)
        def where() -> str:
            import ray

            return ray.get_runtime_context().get_node_id()

        return where.options(scheduling_strategy=bundle_strategy(self.pgs[0], self.cfg.env_nodes)).remote()

    def learner_setup(self, device: str) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        lcfg = dict(batch_size=cfg.batch_size, lr=cfg.lr, adam_eps=cfg.adam_eps, double_dqn=cfg.double_dqn,
                    target_update=cfg.target_update, max_grad_norm=cfg.max_grad_norm, prioritized=cfg.prioritized,
                    priority_beta=cfg.priority_beta, priority_beta_steps=cfg.priority_beta_steps,
                    priority_eps=cfg.priority_eps, learn_on=cfg.learn_on)
        return {"learner_config": lcfg, "device": device, "model_spec": info["model_spec"],
                "frame_stack": cfg.frame_stack, "n_actions": info["n_actions"], "obs_shape": info["obs_shape"],
                "obs_dtype": info["obs_dtype"], "threads": cfg.learner_threads, "nice": cfg.learner_nice,
                "learning_starts": cfg.learning_starts, "updates_per_step": cfg.updates_per_step,
                "seed": cfg.seed, "prefetch": cfg.batch_prefetch, "action_history": cfg.action_history}

    def wait_learners_ready(self) -> None:
        from rtcore.agent.telemetry import LearnerCol

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            st = self.ray.get(self.group.status.remote(), timeout=STARTUP_TIMEOUT)
            if all(st["learners"][j, LearnerCol.READY] >= 1 for j in range(self.n_learners)):
                self.take_group_status(st)  # the learners' pids
                return
            done, _ = self.ray.wait(list(self.runs.values()), timeout=0)
            if done:
                self.ray.get(done[0])  # raises what the learner died of
                raise RuntimeError("a learner ended while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the learners did not warm up within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def start_remote_workers(self, params0: np.ndarray, version0: int, model_bytes: bytes,
                             suffix: str) -> list[list[Any]]:
        from rtcore.cluster.workers import RemoteWorker

        ray, cfg = self.ray, self.cfg
        counts = [int(self.infos[i]["n_workers"]) for i in range(cfg.env_nodes)]
        b: dict[str, float] = {"CPU": 1.0}
        if cfg.worker_gpus > 0:
            b["GPU"] = cfg.worker_gpus
        pg = self.place([dict(b) for _ in range(sum(counts))], "PACK", "remote inference workers")
        actor = ray.get(self.nodes[0].actor_config.remote(), timeout=STARTUP_TIMEOUT)
        cls = ray.remote(RemoteWorker)
        out: list[list[Any]] = []
        k = 0
        for i, n in enumerate(counts):
            handles = []
            for w in range(n):
                a = {**actor, "seed": actor["seed"] + 1000 * i + w}
                handles.append(cls.options(num_cpus=1, num_gpus=cfg.worker_gpus, max_restarts=0,
                                           scheduling_strategy=bundle_strategy(pg, k)).remote(
                    k, model_bytes, suffix, a, cfg.frame_stack, tuple(self.info["obs_shape"]), self.info["obs_dtype"],
                    self.group, params0, version0))
                k += 1
            out.append(handles)
        self.remote_workers = [h for hs in out for h in hs]
        ray.get([h.stats.remote() for h in self.remote_workers], timeout=STARTUP_TIMEOUT)  # every one is up
        return out

    # --- the loop
    def supervise(self, t_end: float, metrics: ClusterMetrics) -> None:
        ray, cfg = self.ray, self.cfg
        next_row = time.monotonic() + cfg.metrics_interval
        while True:
            refs = {i: self.nodes[i].status.remote() for i in sorted(self.live)}
            gref = self.group.status.remote() if self.group is not None and not self.group_lost else None
            for i, ref in refs.items():
                try:
                    st = ray.get(ref, timeout=STATUS_TIMEOUT)
                except self.lost + (ray.exceptions.GetTimeoutError,) as exc:
                    self.node_lost(i, exc)
                    continue
                self.node_rows[i] = st["row"] or self.node_rows.get(i, {})
                self.node_follow[i] = st["follow"]
                self.node_faults[i] = st["faults"]
                if st["ended"]:
                    self.live.discard(i)
                    self.fault(f"env node {i} stopped acting ({st['ended']}); {len(self.live)} env node(s) go on")
            if gref is not None:
                try:
                    self.take_group_status(ray.get(gref, timeout=STATUS_TIMEOUT))
                except self.lost + (ray.exceptions.GetTimeoutError,) as exc:
                    self.group_lost = True
                    last = self.group_status["version"] if self.group_status else -1
                    self.fault(f"the learner group is lost ({type(exc).__name__}: its node died?); learning stops, "
                               f"the env nodes act on with parameter version {last}")
            self.check_learners()
            now = time.monotonic()
            if now >= next_row or now >= t_end:
                row = metrics.row(now - self.t0, self.node_rows, self.node_follow, len(self.live), self.group_status)
                next_row += cfg.metrics_interval
                self.log(f"rtcore: {row['time_s']:.0f} s: {row['env_steps']} steps over {row['live_env_nodes']} env "
                         f"node(s), {row['learner_updates']} updates, parameter version {row['param_version']}")
            if not self.live:
                self.fault("no env node left; the run ends")
                self.stopped_by = "env"
                return
            if now >= t_end:
                return
            time.sleep(max(0.0, min(next_row, t_end) - time.monotonic()))

    def node_lost(self, i: int, exc: BaseException) -> None:
        self.live.discard(i)
        self.dead.add(i)
        self.fault(f"env node {i} lost ({type(exc).__name__}: its node or process died); the run goes on with "
                   f"{len(self.live)} env node(s)")

    def check_learners(self) -> None:
        if not self.runs:
            return
        done, _ = self.ray.wait(list(self.runs.values()), num_returns=len(self.runs), timeout=0)
        for j, ref in list(self.runs.items()):
            if ref not in done:
                continue
            del self.runs[j]
            try:
                self.learner_results[j] = self.ray.get(ref)
                self.fault(f"learner {j} ended before the run did")
            except self.lost as exc:
                if self.stall_killed(j):
                    if self.cfg.respawn:
                        self.respawned[j] = self.respawned.get(j, 0) + 1
                        self.learner_restarts += 1
                        self.start_learner(j)  # it takes its slot once the turnstile sees the dead one gone
                        self.fault(f"learner {j} died (killed by SIGKILL); respawned")
                        continue
                    self.learners_lost.add(j)
                    self.fault(f"learner {j} died (killed by SIGKILL); not respawned (--no-respawn): "
                               f"{len(self.runs)} learner(s) go on")
                    continue
                self.learners_lost.add(j)
                self.fault(f"learner {j} lost ({type(exc).__name__}); {len(self.runs)} learner(s) go on")
            except Exception as exc:
                self.learners_lost.add(j)
                self.fault(f"learner {j} lost ({type(exc).__name__}); {len(self.runs)} learner(s) go on")

    def stall_killed(self, j: int) -> bool:
        """Whether the learner group killed learner ``j`` as stalled (more often than it was respawned); a
        fresh status, so a kill that just happened is in it (the group reports kills under the same lock)."""
        if self.group is None or self.group_lost:
            return False
        try:
            self.take_group_status(self.ray.get(self.group.status.remote(), timeout=STATUS_TIMEOUT))
        except self.lost + (self.ray.exceptions.GetTimeoutError,):
            return False  # the group is gone too (its node died): the supervisor's next status says so
        return self.group_status["stall_kills"][j] > self.respawned.get(j, 0)

    # --- the end
    def stop(self) -> None:
        ray = self.ray
        stops = {i: self.nodes[i].stop.remote() for i in self.nodes if i not in self.dead}
        for i, ref in stops.items():
            try:
                self.node_summaries[i] = ray.get(ref, timeout=STOP_TIMEOUT)
            except Exception as exc:
                self.node_lost(i, exc)
        if self.group is not None and not self.group_lost:
            try:
                ray.get(self.group.stop.remote(), timeout=STOP_TIMEOUT)
                for j, ref in list(self.runs.items()):
                    try:
                        self.learner_results[j] = ray.get(ref, timeout=STOP_TIMEOUT)
                    except Exception as exc:
                        self.learners_lost.add(j)
                        self.fault(f"learner {j} lost at the end ({type(exc).__name__})")
                self.take_group_status(ray.get(self.group.status.remote(), timeout=STOP_TIMEOUT))
                version, flat = ray.get(self.group.final.remote(), timeout=STOP_TIMEOUT)
                path = self.run_dir / "checkpoints" / "final.params.npy"
                path.parent.mkdir(exist_ok=True)
                np.save(path, flat)
                self.final_params_path = path
                ray.get(self.group.close.remote(), timeout=STOP_TIMEOUT)
            except self.lost as exc:
                self.group_lost = True
                self.fault(f"the learner group was lost while stopping ({type(exc).__name__})")
        for w in self.remote_workers:
            try:
                ray.get(w.close.remote(), timeout=STOP_TIMEOUT)
            except Exception:
                pass

    def teardown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for a in list(self.nodes.values()) + self.samplers + self.learners + self.remote_workers + [self.group]:
            if a is not None:
                try:
                    self.ray.kill(a)
                except Exception:
                    pass
        for pg in self.pgs:
            try:
                remove_placement_group(pg)
            except Exception:
                pass


def run_cluster(cfg: RunConfig) -> RunSummary:
    """Runs a validated ``cfg`` with ``cfg.cluster`` set; returns the summary over every env node."""
    from rtcore.shared._shm import reclaim_dead_segments

    ray, started = connect(cfg.cluster, num_cpus=local_cpus(cfg), log_to_driver=not cfg.json)
    address = "local instance on 127.0.0.1" if started else (cfg.cluster[4:] if cfg.cluster.startswith("ray:") else
                                                             "the Ray instance this process is connected to")
    run = _ClusterRun(cfg, ray, address)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise _Terminate()

        old_term = signal.signal(signal.SIGTERM, on_term)
    metrics = None
    try:
        (run.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        run.start()
        run.t0 = time.monotonic()
        metrics = ClusterMetrics(run.run_dir)
        try:
            run.supervise(run.t0 + cfg.seconds, metrics)
        except KeyboardInterrupt:
            run.stopped_by = "interrupt"
        except _Terminate:
            run.stopped_by = "sigterm"
        wall = time.monotonic() - run.t0
        run.stop()
        summary = cluster_summary(run, wall)
        (run.run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        return summary
    finally:
        if metrics is not None:
            metrics.close()
        run.teardown()
        if started:
            ray.shutdown()
        reclaim_dead_segments()  # what actors killed on this machine left (a lost node's, on loopback)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)

