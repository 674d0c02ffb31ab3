"""The run spread over a local multi-node Ray cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``).

One cluster per module (Ray's start-up is the slow part): a head node that runs nothing (0 CPUs) and
three worker nodes, each its own raylet and object store (200 MB). ``--cluster-placement strict-spread``
puts each env node and the learner group on a node of its own, so batches and parameter versions
really cross nodes (through the object stores), while every process stays on this machine and on
loopback. Catch at 400 Hz with a 64-unit MLP keeps the model cheap; what is checked is the plumbing:
learners update on batches from both shards, parameter versions reach the workers of both env nodes,
a node killed mid-run is written off and the run ends with a summary that says so, and nothing is
left behind (segments: conftest's leak check; processes: the killed node's children are gone).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtcore.cluster import _ray
from rtcore.cluster._ray import LOOPBACK, pin_loopback

pin_loopback()  # before Ray is imported: Ray must not rewrite 127.0.0.1 to the interface address
ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

import rtcore  # noqa: E402
from rtcore import RunConfig  # noqa: E402
from rtcore.shared._liveness import alive  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STORE = 200 * 2**20
NODE_CPUS = 3


def _node_args(**kw):
    return dict(num_cpus=NODE_CPUS, node_ip_address=LOOPBACK, object_store_memory=STORE, **kw)


@pytest.fixture(scope="module")
def cluster():
    c = cluster_utils.Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, node_ip_address=LOOPBACK, include_dashboard=False, object_store_memory=STORE))
    try:
        for _ in range(3):
            c.add_node(**_node_args())
        c.wait_for_nodes()
        # rtcore's ray.init: the actors import the rtcore under test, not a source tree in the cwd (CI)
        _ray.init(address=c.address, _node_ip_address=LOOPBACK, include_dashboard=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def cluster_config(tmp_path, **kw) -> RunConfig:
    base = dict(cluster="ray", env="rtcore/Catch", model="mlp:hidden=64", frame_stack=1, seconds=8.0, workers="1",
                learners=1, env_nodes=2, cluster_placement="strict-spread", seed=0, replay_capacity=5_000,
                learning_starts=200, batch_size=32, lr=3e-3, gamma=0.9, n_step=3, target_update=50,
                updates_per_step=0.25, param_interval=0.05, learner_nice=0, quiet=True, plots=False,
                tensorboard=False, latency_iters=5, metrics_interval=0.5, run_dir=str(tmp_path / "run"))
    base.update(kw)
    return RunConfig(**base)


def test_two_env_nodes_and_a_learner_node_learn_together(cluster, tmp_path):
    """``rtcore run --cluster ray:ADDRESS`` from the command line, as a user runs it on a cluster."""
    cfg = cluster_config(tmp_path, cluster=f"ray:{cluster.address}")
    argv = [sys.executable, "-m", "rtcore", "run", "--json"]
    for k, v in cfg.to_dict().items():
        if v != getattr(RunConfig(), k):
            flag = "--" + k.replace("_", "-")
            argv += [flag] if v is True else [f"--no-{flag[2:]}"] if v is False else [flag, str(v)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout)  # --json: one JSON object and nothing else on stdout
    c = s["extra"]["cluster"]
    assert s["stopped_by"] == "time" and not s["faults"], s["faults"]
    # each env node and the learner group on a node of its own, none on the head
    nodes = {c["node_ids"]["0"], c["node_ids"]["1"], c["learner_node_id"]}
    assert len(nodes) == 3 and cluster.head_node.node_id not in nodes
    for i in ("0", "1"):
        n = c["nodes"][i]
        assert n["env_steps"] > 500, n  # 400 Hz for 8 s, less what a loaded machine misses
        assert n["params_follow"]["versions_received"] > 0, n
        assert n["global_version_picked_up"] > 0, n  # the learners' versions reached this node's workers
    assert s["learner_updates"] > 0 and s["param_version"] > 1
    assert s["worker_versions_picked_up"] > 0
    learner = c["learners"]["0"]
    assert learner["batches"] >= s["learner_updates"] and not learner["shards_lost"]
    assert s["workers"] == 2 and s["env_steps"] == c["nodes"]["0"]["env_steps"] + c["nodes"]["1"]["env_steps"]
    run_dir = Path(s["run_dir"])
    assert (run_dir / "checkpoints" / "final.params.npy").is_file()
    assert (run_dir / "node-0" / "metrics.csv").is_file()
    assert (run_dir / "cluster_metrics.csv").read_text().count("\n") >= 3
    for i in (0, 1):  # every process of the env nodes (actor, env driver, workers) is gone after the run
        info = json.loads((run_dir / f"node-{i}" / "processes.json").read_text())
        for pid in [info["runner"]] + [p["pid"] for p in info["children"]]:
            _wait_for(lambda: not alive(pid), 15, f"process {pid} of env node {i} to exit")


def _raylet_of(pid: int, c) -> object:
    """The cluster node whose raylet started process ``pid`` (Ray's workers are its children)."""
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for node in c.worker_nodes:
        if any(p.process.pid == ppid for p in node.all_processes.get("raylet", [])):
            return node
    raise AssertionError(f"no raylet is the parent ({ppid}) of env node process {pid}")


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_a_lost_shard_or_learner_group_is_dropped_and_the_rest_goes_on(cluster):
    """The fast version of a lost node: its actors die (``ray.kill``); a learner's batches come from the
    shards left, a follower says the group is gone; with no shard left the learner says so."""
    import numpy as np

    from rtcore.cluster.learners import LearnerGroup
    from rtcore.cluster.params import ParamFollower
    from rtcore.cluster.sampler import ShardBatches, ShardSampler

    replay = rtcore.ReplayBuffer(256, (3,), obs_dtype="float32", frame_stack=1, n_step=1)
    board = rtcore.ObsBoard((3,), dtype="float32", frame_stack=1)
    store = rtcore.ParamStore(5, buffers=3, max_readers=2)
    group = None
    try:
        for k in range(100):
            replay.add(0, np.full(3, k, np.float32), k % 2, 1.0, k % 25 == 24, False,
                       next_obs=np.zeros(3, np.float32) if k % 25 == 24 else None)
        board.publish(np.zeros(3, np.float32), 99)
        samplers = [ray.remote(ShardSampler).options(num_cpus=0).remote(replay.name, board.name, i) for i in range(2)]
        batches = ShardBatches(list(enumerate(samplers)), 8, "applied", False, 1, (3,), "float32", prefetch=2)
        out = batches.empty_batch(8)
        batches.sample(8, out=out)
        assert len(batches) > 0 and batches.step == 2 * 99
        ray.kill(samplers[1])
        for _ in range(50):  # the fetcher finds shard 1 gone at its next turn; batches keep coming meanwhile
            batches.sample(8, out=out)
            if batches.lost:
                break
        assert batches.lost == [1] and sorted(batches.shards) == [0]
        for _ in range(5):
            batches.sample(8, out=out)
        assert batches.step == 2 * 99  # the lost shard's steps still count for the throttle
        ray.kill(samplers[0])
        with pytest.raises(RuntimeError, match="every replay shard is lost"):
            for _ in range(50):  # the batches fetched before the kill, then the error
                batches.sample(8, out=out)
        batches.close()

        group = ray.remote(LearnerGroup).options(num_cpus=0, max_concurrency=4).remote(
            np.arange(5, dtype=np.float32), 1, "cpu", 0.01, 1.0)
        follower = ParamFollower(group, store, have=-1).start()
        try:
            _wait_for(lambda: follower.received >= 1, 30, "the first parameter version")
            with store.read() as (_, view):
                assert view.tolist() == [0, 1, 2, 3, 4]
            pid = ray.get(group.status.remote())["pid"]
            ray.kill(group)
            _wait_for(lambda: follower.lost, 30, "the follower to see the group is gone")
            assert "learner group is gone" in follower.lost
            _wait_for(lambda: not alive(pid), 30, "the group's process to exit")
            from rtcore.shared._shm import reclaim_dead_segments

            gone = reclaim_dead_segments()  # what a killed actor leaves (a run reclaims it at its end too)
            assert gone and {g.pid for g in gone} == {pid}
        finally:
            follower.stop()
    finally:
        for obj in (replay, board, store):
            obj.close()


@pytest.mark.timeout(240)
def test_an_action_history_crosses_nodes_with_the_batches_and_the_stacks(cluster, tmp_path):
    """``--action-history 2``: the shard samplers send the histories with the batches (learner node), the
    relays send each stack's history to the remote workers."""
    s = rtcore.run(cluster_config(tmp_path, env_nodes=1, workers="2", workers_on="gpu", cluster_placement="spread",
                                  seconds=8.0, action_history=2))
    assert s.stopped_by == "time" and not s.faults, s.faults
    assert s.actions_posted > 100 and s.learner_updates > 0 and s.worker_versions_picked_up > 0


def _cluster_updates(path: Path) -> int:
    import csv

    if not path.is_file():
        return 0
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return int(rows[-1]["learner_updates"]) if rows else 0


@pytest.mark.timeout(240)
def test_a_stalled_learner_is_killed_before_its_turn_is_handed_on_and_respawned(cluster, tmp_path):
    """A cluster learner SIGSTOPped in the turnstile (its turn held): the learner group's watchdog kills it
    once its heartbeat has been silent for half the turnstile's timeout (before the turnstile would hand
    the turn on), the driver respawns it in the group's bundle, updates go on, and the summary says so."""
    import os
    import signal
    import threading
    import _thread

    cfg = cluster_config(tmp_path, env_nodes=1, cluster_placement="spread", seconds=150.0)
    run_dir = Path(cfg.run_dir)
    placement, metrics = run_dir / "placement.json", run_dir / "cluster_metrics.csv"
    seen: dict = {}

    def stall_one() -> None:  # in a thread: the run is in the main thread, so Ctrl-C (interrupt) ends it
        try:
            _wait_for(lambda: placement.is_file() and _cluster_updates(metrics) >= 3, 150, "learner updates")
            pid = int(json.loads(placement.read_text())["learner_pids"]["0"])
            seen["pid"] = pid
            t0 = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            try:
                _wait_for(lambda: not alive(pid), 20, f"the stopped learner {pid} to be killed")
                seen["killed_after_s"] = time.monotonic() - t0
            finally:
                if alive(pid):
                    os.kill(pid, signal.SIGCONT)
            seen["at_kill"] = at = _cluster_updates(metrics)
            _wait_for(lambda: _cluster_updates(metrics) >= at + 3, 60, "updates after the respawn")
            seen["new_pid"] = int(json.loads(placement.read_text())["learner_pids"]["0"])
        except BaseException as exc:
            seen["error"] = exc
        finally:
            _thread.interrupt_main()  # ends the run now (stopped_by "interrupt"), well before its 150 s

    t = threading.Thread(target=stall_one, daemon=True)
    t.start()
    s = rtcore.run(cfg)
    t.join(10)
    if "error" in seen:
        raise seen["error"]
    assert s.stopped_by == "interrupt", s.faults
    # the turnstile's timeout is 2 s: killed at about 1 s of silence, before the turn is handed on
    assert seen["killed_after_s"] < 2.0 + 1.0, seen
    stalled = [f for f in s.faults if f.startswith("learner 0 stalled")]
    assert len(stalled) == 1 and "killed before the turnstile hands its turn on" in stalled[0], s.faults
    assert any(f == "learner 0 died (killed by SIGKILL); respawned" for f in s.faults), s.faults
    assert s.learner_restarts == 1 and s.learners_lost == 0 and not s.extra["cluster"]["learner_group_lost"]
    assert seen["new_pid"] != seen["pid"] and s.learner_updates >= seen["at_kill"] + 3
    assert json.loads((run_dir / "summary.json").read_text())["learner_restarts"] == 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_remote_inference_workers_act_through_a_relay(cluster, tmp_path):
    """``--workers-on gpu`` with no GPU: remote worker actors on other nodes; the env node's relays take
    their turns, the round trip counts as the pass and is measured. With an action history: the relay
    sends it with the stack, the learners get it with their batches."""
    s = rtcore.run(cluster_config(tmp_path, env_nodes=1, workers="2", workers_on="gpu", cluster_placement="spread",
                                  seconds=8.0, action_history=2))  # the history travels with the stack
    c = s.extra["cluster"]
    assert s.stopped_by == "time" and not s.faults, s.faults
    relay = c["nodes"][0]["relay"]
    assert relay["round_trips"] > 100 and relay["round_trip_ms_p50"] > relay["network_ms_p50"] > 0
    assert s.actions_posted > 100 and s.learner_updates > 0 and s.worker_versions_picked_up > 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_node_killed_mid_run_is_written_off_and_the_run_goes_on(cluster, tmp_path):
    import threading

    extra = cluster.add_node(**_node_args())  # a 4th node: the one killed leaves the module's three
    cluster.wait_for_nodes()
    cfg = cluster_config(tmp_path, seconds=14.0)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=rtcore.run(cfg)), daemon=True)
    t.start()
    procs = Path(cfg.run_dir) / "node-1" / "processes.json"
    metrics = Path(cfg.run_dir) / "node-1" / "metrics.csv"
    _wait_for(lambda: procs.is_file() and metrics.is_file() and metrics.read_text().count("\n") >= 3, 150,
              "env node 1 to start and write metrics")
    info = json.loads(procs.read_text())
    victim = _raylet_of(info["runner"], cluster)
    children = [(p["pid"]) for p in info["children"]] + [info["runner"]]
    cluster.remove_node(victim, allow_graceful=False)  # its raylet and every process it started die
    t.join(200)
    assert not t.is_alive(), "the run did not end after a node was killed"
    s = out["s"]
    c = s.extra["cluster"]
    assert s.stopped_by == "time", s.faults
    assert c["env_nodes_lost"] == [1], c
    assert any("env node 1 lost" in f for f in s.faults), s.faults
    assert c["nodes"][0]["ended"] == "time" and c["nodes"][0]["env_steps"] > 1000
    assert c["nodes"][1]["env_steps"] > 0  # what the lost node did before, from its last row
    assert s.learner_updates > 0 and not c["learner_group_lost"]
    for pid in children:  # the killed node's env driver, workers and actor: gone (children die with the actor)
        _wait_for(lambda: not alive(pid), 15, f"process {pid} of the killed node to exit")
    for node in cluster.worker_nodes:  # the cluster is fine for whoever comes next
        assert node.all_processes["raylet"][0].process.poll() is None
    if victim is not extra:
        cluster.add_node(**_node_args())
        cluster.wait_for_nodes()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_learner_node_killed_mid_run_leaves_the_env_nodes_acting(cluster, tmp_path):
    import threading

    cluster.add_node(**_node_args())  # a 4th node: the one killed leaves the module's three
    cluster.wait_for_nodes()
    cfg = cluster_config(tmp_path, seconds=14.0)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=rtcore.run(cfg)), daemon=True)
    t.start()
    placement = Path(cfg.run_dir) / "placement.json"
    metrics = Path(cfg.run_dir) / "cluster_metrics.csv"
    _wait_for(lambda: placement.is_file() and metrics.is_file() and metrics.read_text().count("\n") >= 4, 150,
              "the run to start and learn for a while")
    learner_node = json.loads(placement.read_text())["learner_node"]
    victim = next(n for n in cluster.worker_nodes if n.node_id == learner_node)
    cluster.remove_node(victim, allow_graceful=False)
    t.join(200)
    assert not t.is_alive(), "the run did not end after the learner node was killed"
    s = out["s"]
    c = s.extra["cluster"]
    assert s.stopped_by == "time" and c["learner_group_lost"] and c["env_nodes_lost"] == [], s.faults
    assert any("learner group is lost" in f for f in s.faults), s.faults
    assert s.learners_lost == 1 and s.extra["final_params"] is None
    for i in (0, 1):  # both env nodes acted to the end, on the last version they had
        assert c["nodes"][i]["ended"] == "time" and c["nodes"][i]["params_follow"]["lost"], c["nodes"][i]
