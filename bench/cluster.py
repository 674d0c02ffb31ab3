"""What each cross-node path of ``rtcore run --cluster`` costs, against the local shared-memory path, same run.

A local two-node Ray cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``: a head that runs nothing, node
A for the env side, node B for the learner/remote side, each its own raylet and object store), so every
remote figure crosses two object stores over loopback TCP: the cost of Ray's path on this machine, not of
a network (add the wire's latency and bandwidth for a real cluster). Paths:

* **obs -> action round trip** (``--workers-on gpu``): from an actor on node A (where the env-node relay
  runs), ``worker.act.remote(stack, step)`` to an actor on node B that copies the 4x84x84 uint8 stack and
  returns an action, ``ray.get``. Peer: ``ObsBoard`` + ``ActionBoard`` between two processes, ping-pong
  (bench/handoff.py's ``rt_rtcore``: publish frame s, worker spins on the step, reads the stack, posts).
  The model's forward pass is the same on both paths and left out. p50/p99 from ``--n-roundtrip``
  (10,000) round trips per run.
* **replay batch** of 32 transitions of 4x84x84 uint8 stacks: a learner actor on node B drawing
  batches from a :class:`rtcore.cluster.sampler.ShardSampler` on node A through
  :class:`~rtcore.cluster.sampler.ShardBatches`, with 2 batches in flight (the run's default) and with 1
  (each batch waited for), back to back; and the wait for a batch when the learner spends
  ``--gradient-ms`` (20) between batches (a sleep, as for a gradient on a GPU), 2 in flight: what
  prefetching hides. Peer: ``ReplayBuffer.sample(32, out=)`` in the learner's own process.
* **parameter broadcast**, flat float32 vectors of Impala k=1 (903,718) and k=29 (104,682,918 params,
  419 MB): ``ray.put`` on node B (the learner group), ``ray.get`` + ``ParamStore.publish`` on node A (an
  env node's follower). Peer: ``ParamStore.publish`` + a reader's pin of the new version (what a worker
  on the learners' machine does). Each node's object store is sized to hold a k=29 version twice
  (``--store-mb``, default 1,000 MB); the cluster's 200 MB test stores could not hold one.

Medians of ``--runs`` (3) runs; the load average at start and end; ends with one JSON line.

    python bench/cluster.py [--quick] [--runs 3] [--n-roundtrip 10000] [--store-mb 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtcore.cluster import _ray  # noqa: E402
from rtcore.cluster._ray import LOOPBACK, pin_loopback  # noqa: E402

pin_loopback()
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import rtcore  # noqa: E402

SHAPE, STACK = (84, 84), 4
K1, K29 = 903_718, 104_682_918


@ray.remote(num_cpus=1, resources={"node_b": 1})
class Far:
    """Node B: the remote inference worker's transport, the learner side of batches, the group's put."""

    def act(self, stack: np.ndarray, step: int) -> int:
        return int(stack[-1, 0, 0]) & 7

    def batches(self, sampler: object, n: int, prefetch: int, compute_s: float = 0.0) -> list[float]:
        from rtcore.cluster.sampler import ShardBatches

        b = ShardBatches([(0, sampler)], 32, "applied", False, STACK, SHAPE, "uint8", prefetch=prefetch)
        out = b.empty_batch(32)
        for _ in range(5):  # warm: the first batches pay for actor start-up
            b.sample(32, out=out)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            b.sample(32, out=out)
            times.append(time.perf_counter() - t0)
            if compute_s:
                time.sleep(compute_s)  # a gradient on another device (a GPU): the CPU is free meanwhile
        b.close()
        return times

    def put(self, numel: int) -> tuple[float, list]:
        flat = np.random.default_rng(0).standard_normal(numel, dtype=np.float32)
        t0 = time.perf_counter()
        ref = ray.put(flat)
        return time.perf_counter() - t0, [ref]


@ray.remote(num_cpus=1, resources={"node_a": 1})
class Near:
    """Node A: the env node's relay (round trips) and parameter follower (fetch + publish)."""

    def __init__(self) -> None:
        self.store = None

    def roundtrips(self, far: object, n: int) -> np.ndarray:
        stack = np.random.default_rng(0).integers(0, 255, (STACK, *SHAPE), dtype=np.uint8)
        for s in range(200):
            ray.get(far.act.remote(stack, s))
        times = np.empty(n)
        for s in range(n):
            t0 = time.perf_counter()
            ray.get(far.act.remote(stack, s))
            times[s] = time.perf_counter() - t0
        return times * 1e6

    def fetch_publish(self, refs: list, numel: int) -> tuple[float, float]:
        if self.store is None or self.store.numel != numel:
            if self.store is not None:
                self.store.close()
            self.store = rtcore.ParamStore(numel, buffers=3, max_readers=2)
        t0 = time.perf_counter()
        flat = ray.get(refs[0])
        t1 = time.perf_counter()
        self.store.publish(flat)
        t2 = time.perf_counter()
        del flat
        return t1 - t0, t2 - t1

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def local_params(numel: int, reps: int) -> list[float]:
    """ParamStore.publish of a new version + a reader's pin of it, seconds, ``reps`` times."""
    flat = np.random.default_rng(0).standard_normal(numel, dtype=np.float32)
    store = rtcore.ParamStore(numel, buffers=3, max_readers=2)
    try:
        store.publish(flat)
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            store.publish(flat)
            store.pin()
            store.unpin()
            out.append(time.perf_counter() - t0)
        return out
    finally:
        store.close()


def filled_replay(n: int) -> rtcore.ReplayBuffer:
    rng = np.random.default_rng(0)
    replay = rtcore.ReplayBuffer(n, SHAPE, frame_stack=STACK, n_step=3)
    frames = rng.integers(0, 255, (16, *SHAPE), dtype=np.uint8)
    for i in range(n):
        end = (i + 1) % 500 == 0
        replay.add(0, frames[i % 16], i % 6, 0.0, end, False, next_obs=frames[0] if end else None)
    return replay


def main(argv: list[str] | None = None) -> int:
    from _machine import describe, load
    from handoff import rt_rtcore

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer batches and parameter versions (round trips stay 10k)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n-roundtrip", type=int, default=10_000)
    ap.add_argument("--store-mb", type=int, default=1000, help="object store per node (k=29 needs 2 x 419 MB)")
    ap.add_argument("--gradient-ms", type=float, default=20.0,
                    help="a learner's gradient time the prefetched batches travel behind (a sleep: a GPU gradient)")
    args = ap.parse_args(argv)
    n_batches = 100 if args.quick else 500
    n_versions = 3 if args.quick else 10
    start = load()
    print(describe(start), flush=True)
    store = args.store_mb * 2**20
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, node_ip_address=LOOPBACK, include_dashboard=False,
                                                          object_store_memory=200 * 2**20))
    replay = None
    try:
        for name in ("node_a", "node_b"):
            c.add_node(num_cpus=2, resources={name: 8}, node_ip_address=LOOPBACK, object_store_memory=store)
        c.wait_for_nodes()
        _ray.init(address=c.address, _node_ip_address=LOOPBACK, include_dashboard=False)
        from rtcore.cluster.sampler import ShardSampler

        far, near = Far.remote(), Near.remote()
        replay = filled_replay(5_000)
        board = rtcore.ObsBoard(SHAPE, "uint8", frame_stack=STACK)
        board.publish(np.zeros(SHAPE, np.uint8), 4_999)
        sampler = ray.remote(ShardSampler).options(num_cpus=0, resources={"node_a": 1}).remote(replay.name, board.name, 0)
        res: dict[str, list] = {k: [] for k in ("rt_local", "rt_remote", "b_local", "b_remote2", "b_remote1", "b_behind",
                                                "p1_local", "p1_put", "p1_fetch", "p1_pub", "p29_local", "p29_put",
                                                "p29_fetch", "p29_pub")}
        out = replay.empty_batch(32)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}: round trips", flush=True)
            loc = rt_rtcore(args.n_roundtrip)
            rem = ray.get(near.roundtrips.remote(far, args.n_roundtrip))
            res["rt_local"].append((np.percentile(loc, 50), np.percentile(loc, 99)))
            res["rt_remote"].append((np.percentile(rem, 50), np.percentile(rem, 99)))
            print(f"run {run + 1}/{args.runs}: batches", flush=True)
            t = []
            for _ in range(n_batches):
                t0 = time.perf_counter()
                replay.sample(32, out=out)
                t.append(time.perf_counter() - t0)
            res["b_local"].append(statistics.median(t) * 1e3)
            for pf in (2, 1):
                t = ray.get(far.batches.remote(sampler, n_batches, pf))
                res[f"b_remote{pf}"].append(statistics.median(t) * 1e3)
            t = ray.get(far.batches.remote(sampler, n_batches, 2, args.gradient_ms / 1e3))
            res["b_behind"].append(statistics.median(t) * 1e3)
            for tag, numel in (("p1", K1), ("p29", K29)):
                print(f"run {run + 1}/{args.runs}: parameters {tag}", flush=True)
                res[f"{tag}_local"].append(statistics.median(local_params(numel, n_versions)) * 1e3)
                put, fetch, pub = [], [], []
                for _ in range(n_versions):
                    dt, refs = ray.get(far.put.remote(numel))
                    f, p = ray.get(near.fetch_publish.remote(refs, numel))
                    del refs
                    put.append(dt)
                    fetch.append(f)
                    pub.append(p)
                for k, v in (("put", put), ("fetch", fetch), ("pub", pub)):
                    res[f"{tag}_{k}"].append(statistics.median(v) * 1e3)
        ray.get(near.close.remote())
        board.close()
    finally:
        if replay is not None:
            replay.close()
        ray.shutdown()
        c.shutdown()
    end = load()

    def med(key: str, i: int | None = None) -> float:
        xs = [x[i] for x in res[key]] if i is not None else res[key]
        return float(statistics.median(xs))

    out_json: dict = {"bench": "cluster", "runs": args.runs, "quick": args.quick, "load_start": start, "load_end": end,
                      "object_store_mb": args.store_mb,
                      "roundtrip_us": {"local_p50": med("rt_local", 0), "local_p99": med("rt_local", 1),
                                       "remote_p50": med("rt_remote", 0), "remote_p99": med("rt_remote", 1),
                                       "samples": args.n_roundtrip},
                      "batch_ms": {"local": med("b_local"), "remote_prefetch2": med("b_remote2"),
                                   "remote_prefetch1": med("b_remote1"), "remote_wait_behind_gradient": med("b_behind"),
                                   "gradient_ms": args.gradient_ms, "batches": n_batches}}
    rows = [("obs->action round trip p50", f"{med('rt_local', 0):.1f} us", f"{med('rt_remote', 0):.0f} us",
             med("rt_remote", 0) / med("rt_local", 0)),
            ("obs->action round trip p99", f"{med('rt_local', 1):.1f} us", f"{med('rt_remote', 1):.0f} us",
             med("rt_remote", 1) / med("rt_local", 1)),
            ("replay batch 32x4x84x84, 2 in flight", f"{med('b_local'):.3f} ms", f"{med('b_remote2'):.2f} ms",
             med("b_remote2") / med("b_local")),
            ("replay batch, 1 in flight", f"{med('b_local'):.3f} ms", f"{med('b_remote1'):.2f} ms",
             med("b_remote1") / med("b_local")),
            (f"replay batch wait behind a {args.gradient_ms:g} ms gradient, 2 in flight", f"{med('b_local'):.3f} ms",
             f"{med('b_behind'):.2f} ms", med("b_behind") / med("b_local"))]
    for tag, name in (("p1", "k=1 (3.6 MB)"), ("p29", "k=29 (419 MB)")):
        total = med(f"{tag}_put") + med(f"{tag}_fetch") + med(f"{tag}_pub")
        out_json[f"params_{tag}_ms"] = {"local_publish_pin": med(f"{tag}_local"), "put": med(f"{tag}_put"),
                                        "fetch": med(f"{tag}_fetch"), "publish": med(f"{tag}_pub"), "remote_total": total}
        rows.append((f"parameter version {name}: put + fetch + publish", f"{med(f'{tag}_local'):.2f} ms",
                     f"{med(f'{tag}_put'):.1f} + {med(f'{tag}_fetch'):.1f} + {med(f'{tag}_pub'):.1f} = {total:.1f} ms",
                     total / med(f"{tag}_local")))
    print(describe(start, end))
    print(f"{'path':48s} {'local (shared memory)':>22s} {'across nodes (Ray)':>34s} {'ratio':>7s}")
    for name, loc, rem, ratio in rows:
        print(f"{name:48s} {loc:>22s} {rem:>34s} {ratio:7.1f}x")
    print(json.dumps(out_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
