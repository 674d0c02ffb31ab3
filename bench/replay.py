"""Replay buffer benchmark: rtcore against cpprb, TorchRL and a numpy ring, on an Atari-shaped workload.

Workload (the same for every peer): 84x84 uint8 frames, frame_stack 4, capacity 100,000 transitions,
episodes of 1,000 steps, ``add`` one transition at a time, ``sample(32)`` returning the obs and next_obs
stacks (plus action, reward, done). Peers:

- rtcore.ReplayBuffer (frames stored once, stacks rebuilt at sample time, out= reuse)
- cpprb.ReplayBuffer with next_of="obs" and stack_compress="obs" (stacks stored compressed)
- cpprb.ReplayBuffer plain (obs and next_obs stacks stored as given)
- torchrl ReplayBuffer + LazyTensorStorage (obs and next_obs stacks stored as given)
- a numpy ring storing single frames and rebuilding stacks with the same episode-boundary rule
  (vectorised gather into preallocated arrays: the best plain numpy can do)

Each peer runs in its own subprocess so its resident memory (psutil RSS, measured as the increase
over the process before the buffer was created) is its own. Memcpy bandwidth is measured in the same
run and gives the bound of sampling: one batch writes 2 * 32 * 4 frames. Also measured: a writer
process and a sampler process on one rtcore buffer at once.

Prioritized replay (same workload, proportional priorities, alpha 0.6, beta 0.4): ``add``,
``sample(32)`` with importance weights, ``update_priorities`` of the 32 sampled indices, and the
learner's loop (sample then update) per peer:

- rtcore.ReplayBuffer(prioritized=True): lock-free sum tree in the shared segment (out= reuse)
- cpprb.PrioritizedReplayBuffer, stack_compress="obs" + next_of="obs", and plain stacks; the faster of
  the two is the ratio's peer (its best storage, measured, not assumed)
- TorchRL ReplayBuffer + LazyTensorStorage (its fastest, in-memory storage) + PrioritizedSampler, where
  its C++ sum tree loads on the installed torch (otherwise reported as not run, with the reason)

Every peer is warmed before timing (20 sample+update rounds: allocator and caches warm, cpprb's and
TorchRL's output buffers allocated), and update priorities come from a precomputed pool. rtcore's
buffer is shared by any number of processes while the peers' are in-process objects. The cost of
priorities is rtcore's prioritized sample(32) rate against the uniform sample(32) rate of the same
buffer in the same process (the ring's own sampler), in alternating blocks, medians of 3.
update_priorities latency tails are from 10,000 timed calls.

``--quick`` (under 30 s) times 10,000 adds per peer and builds cpprb and TorchRL with capacity 20,000
(the stacked stores take 56 KB per transition, 5.6 GB at full capacity; cpprb fills at ~10k adds/s),
projecting their memory linearly to 100,000 (marked "projected"); rtcore and the numpy ring always
run at full capacity. The last line printed is one
JSON object of all figures.

What bounds rtcore's sample(32): copying 5 randomly placed 7 KB frames per row out of shared memory
while a writer may overwrite them. The copy goes through csrc/common/seqlock.h (inline-asm vector moves,
so the seqlock's race is not a C++ data race), which bench/cpp/bench_replay.cpp measures against a
plain memcpy gather of the same frames (it reaches ~0.99x of it); the numpy ring copies with vectorised memcpy from memory that
numpy backs with transparent huge pages, which /dev/shm (tmpfs) does not get here.

Usage: python bench/replay.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

SHAPE = (84, 84)
FRAME_BYTES = 84 * 84
K = 4
BATCH = 32
EP_LEN = 1000
POOL = 64  # distinct random frames cycled through (generation is not timed)

PEERS = ["rtcore", "numpy_ring", "cpprb_compressed", "cpprb_plain", "torchrl"]
PER_PEERS = ["rtcore_per", "cpprb_per_compressed", "cpprb_per_plain", "torchrl_per"]
ALPHA, BETA = 0.6, 0.4
# Run at capacity 20,000 in --quick (memory projected linearly): the stacked stores take 56 KB per
# transition, and cpprb must be filled one add at a time (see make_peer), at about 10k adds/s.
QUICK_SMALL = {"cpprb_compressed", "cpprb_plain", "torchrl", "cpprb_per_compressed", "cpprb_per_plain", "torchrl_per"}


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --- peers: each has add(t) and sample() ----------------------------------------------------------


class NumpyRing:
    """Single frames in a numpy ring; stacks rebuilt at sample time, padded at episode starts."""

    def __init__(self, capacity: int) -> None:
        self.cap = capacity
        self.frames = np.zeros((capacity, *SHAPE), np.uint8)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, np.bool_)
        self.ep_off = np.zeros(capacity, np.int64)  # position - episode start
        self.final = np.zeros(capacity, np.bool_)  # holds an episode's last next_obs
        self.head = 0
        self.off = 0
        self.offs = np.arange(K) - (K - 1)
        self.out_obs = np.zeros((BATCH, K, *SHAPE), np.uint8)
        self.out_next = np.zeros((BATCH, K, *SHAPE), np.uint8)
        self.rng = np.random.default_rng(0)

    def add(self, obs, action, reward, terminated, truncated, next_obs=None) -> None:
        i = self.head % self.cap
        self.frames[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.term[i] = terminated
        self.ep_off[i] = self.off
        self.final[i] = False
        self.head += 1
        self.off += 1
        if terminated or truncated:
            j = self.head % self.cap
            self.frames[j] = next_obs
            self.final[j] = True
            self.ep_off[j] = self.off
            self.head += 1
            self.off = 0

    def sample(self, b: int):
        lo = max(0, self.head - self.cap + K - 1)
        j = self.rng.integers(lo, self.head - 1, size=b)
        bad = self.final[j % self.cap]
        while bad.any():  # an episode's final obs is not a transition start
            j[bad] = self.rng.integers(lo, self.head - 1, size=int(bad.sum()))
            bad = self.final[j % self.cap]
        jm = j % self.cap
        off = self.ep_off[jm]
        pos = j[:, None] + np.maximum(self.offs, -np.minimum(off, K - 1)[:, None])
        npos = (j + 1)[:, None] + np.maximum(self.offs, -np.minimum(off + 1, K - 1)[:, None])
        np.take(self.frames, pos % self.cap, axis=0, out=self.out_obs, mode="clip")
        np.take(self.frames, npos % self.cap, axis=0, out=self.out_next, mode="clip")
        return self.out_obs, self.out_next, self.action[jm], self.reward[jm], self.term[jm]


def make_peer(name: str, capacity: int, frames: np.ndarray):
    """Returns (add(t), sample(), bulk_fill(t0, t1) or None)."""
    def step(t: int):
        return frames[t % POOL], t % 18, float(t % 7), (t + 1) % EP_LEN == 0

    if name == "rtcore":
        import rtcore

        buf = rtcore.ReplayBuffer(capacity, SHAPE, "uint8", frame_stack=K)
        out = buf.empty_batch(BATCH)
        add = buf.add
        last = frames[POOL - 1]

        def radd(t: int) -> None:
            obs, a, r, end = step(t)
            add(0, obs, a, r, end, False, last if end else None)

        def rsample():
            return buf.sample(BATCH, out=out)

        return radd, rsample, None, buf

    if name == "numpy_ring":
        ring = NumpyRing(capacity)
        last = frames[POOL - 1]

        def nadd(t: int) -> None:
            obs, a, r, end = step(t)
            ring.add(obs, a, r, end, False, last if end else None)

        return nadd, lambda: ring.sample(BATCH), None, ring

    # Stacks for the peers that take them (channel-last for cpprb's stack_compress).
    if name.startswith("cpprb"):
        import cpprb

        stacks = np.stack([np.stack([frames[(i + k) % POOL] for k in range(K)], axis=-1) for i in range(POOL)])
        env = {"obs": {"shape": (*SHAPE, K), "dtype": np.uint8}, "act": {"dtype": np.int64}, "rew": {}, "done": {}}
        if name == "cpprb_compressed":
            rb = cpprb.ReplayBuffer(capacity, env, next_of="obs", stack_compress="obs")
        else:
            env["next_obs"] = {"shape": (*SHAPE, K), "dtype": np.uint8}
            rb = cpprb.ReplayBuffer(capacity, env)

        def cadd(t: int) -> None:
            obs, a, r, end = step(t)
            rb.add(obs=stacks[t % POOL], act=a, rew=r, next_obs=stacks[(t + 1) % POOL], done=end)
            if end:
                rb.on_episode_end()

        # Filled by single adds only: cpprb samples 3-5x faster after a bulk add than after the
        # one-at-a-time adds of this workload (measured), so a bulk fill would flatter it.
        return cadd, lambda: rb.sample(BATCH), None, rb

    if name == "torchrl":
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage, ReplayBuffer

        torch.set_num_threads(1)
        stacks = torch.from_numpy(np.stack([np.stack([frames[(i + k) % POOL] for k in range(K)]) for i in range(POOL)]))
        rb = ReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=BATCH)

        def tadd(t: int) -> None:
            _, a, r, end = step(t)
            rb.add(TensorDict({"obs": stacks[t % POOL], "action": torch.tensor(a), "reward": torch.tensor(r),
                               "done": torch.tensor(end), "next_obs": stacks[(t + 1) % POOL]}, []))

        def tfill(t0: int, t1: int) -> None:
            for c in range(t0, t1, 1000):
                idx = torch.arange(c, min(c + 1000, t1))
                rb.extend(TensorDict({"obs": stacks[idx % POOL], "action": idx % 18, "reward": (idx % 7).float(),
                                      "done": (idx + 1) % EP_LEN == 0, "next_obs": stacks[(idx + 1) % POOL]},
                                     [len(idx)]))

        return tadd, lambda: rb.sample(), tfill, rb

    raise ValueError(f"unknown peer {name}")


def make_per_peer(name: str, capacity: int, frames: np.ndarray):
    """Returns (add(t), sample() -> batch, update(batch, priorities)) of a prioritized peer."""
    def step(t: int):
        return frames[t % POOL], t % 18, float(t % 7), (t + 1) % EP_LEN == 0

    if name == "rtcore_per":
        import rtcore

        buf = rtcore.ReplayBuffer(capacity, SHAPE, "uint8", frame_stack=K, prioritized=True, alpha=ALPHA, beta=BETA)
        out = buf.empty_batch(BATCH)
        add, last = buf.add, frames[POOL - 1]
        upd = buf.update_priorities

        def radd(t: int) -> None:
            obs, a, r, end = step(t)
            add(0, obs, a, r, end, False, last if end else None)

        h = buf._h

        def uniform() -> None:  # the ring's uniform sampler on the same buffer: the cost of priorities, A/B
            h.sample(out.obs, out.next_obs, out.action, out.reward, out.done, out.discount, out.was_default,
                     out.delay, out.index)

        return radd, lambda: buf.sample(BATCH, out=out), lambda b, p: upd(b.index, p), (buf, uniform)

    if name.startswith("cpprb_per"):
        import cpprb

        stacks = np.stack([np.stack([frames[(i + k) % POOL] for k in range(K)], axis=-1) for i in range(POOL)])
        env = {"obs": {"shape": (*SHAPE, K), "dtype": np.uint8}, "act": {"dtype": np.int64}, "rew": {}, "done": {}}
        if name == "cpprb_per_compressed":
            rb = cpprb.PrioritizedReplayBuffer(capacity, env, alpha=ALPHA, next_of="obs", stack_compress="obs")
        else:
            env["next_obs"] = {"shape": (*SHAPE, K), "dtype": np.uint8}
            rb = cpprb.PrioritizedReplayBuffer(capacity, env, alpha=ALPHA)

        def cadd(t: int) -> None:
            obs, a, r, end = step(t)
            rb.add(obs=stacks[t % POOL], act=a, rew=r, next_obs=stacks[(t + 1) % POOL], done=end)
            if end:
                rb.on_episode_end()

        return cadd, lambda: rb.sample(BATCH, beta=BETA), lambda b, p: rb.update_priorities(b["indexes"], p), rb

    if name == "torchrl_per":
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage, ReplayBuffer
        from torchrl.data.replay_buffers.samplers import PrioritizedSampler

        torch.set_num_threads(1)
        stacks = torch.from_numpy(np.stack([np.stack([frames[(i + k) % POOL] for k in range(K)]) for i in range(POOL)]))
        rb = ReplayBuffer(storage=LazyTensorStorage(capacity), sampler=PrioritizedSampler(capacity, ALPHA, BETA),
                          batch_size=BATCH)

        def tadd(t: int) -> None:
            _, a, r, end = step(t)
            rb.add(TensorDict({"obs": stacks[t % POOL], "action": torch.tensor(a), "reward": torch.tensor(r),
                               "done": torch.tensor(end), "next_obs": stacks[(t + 1) % POOL]}, []))

        def tupdate(b, p) -> None:
            rb.update_priority(b[1]["index"], torch.from_numpy(p))

        return tadd, lambda: rb.sample(return_info=True), tupdate, rb

    raise ValueError(f"unknown peer {name}")


def run_per_peer(name: str, capacity: int, adds: int, fill: int, sample_s: float) -> dict[str, Any]:
    frames = np.random.default_rng(0).integers(0, 256, size=(POOL, *SHAPE), dtype=np.uint8)
    prios = np.abs(np.random.default_rng(4).normal(size=(256, BATCH))) + 1e-6  # |TD error| + eps
    base = rss()
    add, sample, update, keep = make_per_peer(name, capacity, frames)
    add(0)
    t0 = time.perf_counter()
    for t in range(1, adds + 1):
        add(t)
    add_s = time.perf_counter() - t0
    for t in range(adds + 1, fill):  # single adds only, as the uniform peers (see make_peer)
        add(t)
    for k in range(20):  # warm: allocator, caches, the peers' output buffers
        update(sample(), prios[k % 256])

    def rate(body) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(10):
                body(n)
                n += 1
            if time.perf_counter() - t0 >= sample_s:
                return n / (time.perf_counter() - t0)

    uniform = keep[1] if isinstance(keep, tuple) else None
    if uniform is not None:  # alternate uniform and prioritized blocks on the same buffer; medians
        pairs = [(rate(lambda k: uniform()), rate(lambda k: sample())) for _ in range(3)]
        uniform_rate = float(np.median([u for u, _ in pairs]))
        sample_rate = float(np.median([p for _, p in pairs]))
    else:
        uniform_rate = None
        sample_rate = rate(lambda k: sample())
    batch = sample()
    update_rate = rate(lambda k: update(batch, prios[k % 256]))
    loop_rate = rate(lambda k: update(sample(), prios[k % 256]))
    lat = np.empty(10_000)
    for k in range(lat.size):
        t1 = time.perf_counter_ns()
        update(batch, prios[k % 256])
        lat[k] = time.perf_counter_ns() - t1
    used = rss() - base
    del keep
    return {
        "peer": name,
        "adds_per_s": adds / add_s,
        "batches_per_s": sample_rate,
        "uniform_batches_per_s": uniform_rate,
        "updates_per_s": update_rate,
        "sample_update_per_s": loop_rate,
        "update_us_p50": float(np.percentile(lat, 50)) / 1e3,
        "update_us_p99": float(np.percentile(lat, 99)) / 1e3,
        "rss_bytes": used,
        "capacity": capacity,
        "filled": max(fill, adds + 1),
    }


def run_peer(name: str, capacity: int, adds: int, fill: int, sample_s: float) -> dict[str, Any]:
    frames = np.random.default_rng(0).integers(0, 256, size=(POOL, *SHAPE), dtype=np.uint8)
    base = rss()
    add, sample, bulk, keep = make_peer(name, capacity, frames)
    add(0)
    t0 = time.perf_counter()
    for t in range(1, adds + 1):
        add(t)
    add_s = time.perf_counter() - t0
    if fill > adds + 1:
        if bulk is not None:
            bulk(adds + 1, fill)
        else:
            for t in range(adds + 1, fill):
                add(t)
    for _ in range(20):
        sample()  # warm up
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(10):
            sample()
        n += 10
        if time.perf_counter() - t0 >= sample_s:
            break
    sample_dt = time.perf_counter() - t0
    used = rss() - base
    del keep
    return {
        "peer": name,
        "adds_per_s": adds / add_s,
        "batches_per_s": n / sample_dt,
        "rss_bytes": used,
        "capacity": capacity,
        "filled": max(fill, adds + 1),
    }


def memcpy_bandwidth(seconds: float) -> float:
    src = np.random.default_rng(1).integers(0, 256, size=64 << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        np.copyto(dst, src)
        n += 1
    return n * src.nbytes / (time.perf_counter() - t0)


# --- a writer process and a sampler process at once ----------------------------------------------


def _writer(name: str, go, stop, q) -> None:
    import rtcore

    buf = rtcore.ReplayBuffer.attach(name)
    frames = np.random.default_rng(2).integers(0, 256, size=(POOL, *SHAPE), dtype=np.uint8)
    add, last, n = buf.add, frames[-1], 0
    q.put(("ready", 1))
    go.wait()
    t0 = time.perf_counter()
    while not stop.is_set():
        for _ in range(100):
            end = (n + 1) % EP_LEN == 0
            add(0, frames[n % POOL], n % 18, 1.0, end, False, last if end else None)
            n += 1
    q.put(("adds_per_s", n / (time.perf_counter() - t0)))
    buf.close()


def _sampler(name: str, go, stop, q) -> None:
    import rtcore

    buf = rtcore.ReplayBuffer.attach(name)
    out = buf.empty_batch(BATCH)
    n = 0
    q.put(("ready", 1))
    go.wait()
    t0 = time.perf_counter()
    while not stop.is_set():
        buf.sample(BATCH, out=out)
        n += 1
    q.put(("batches_per_s", n / (time.perf_counter() - t0)))
    q.put(("collisions", buf._h.collisions()))
    buf.close()


def concurrent(capacity: int, seconds: float) -> dict[str, float]:
    import rtcore

    ctx = mp.get_context("spawn")
    frames = np.random.default_rng(3).integers(0, 256, size=(POOL, *SHAPE), dtype=np.uint8)
    with rtcore.ReplayBuffer(capacity, SHAPE, "uint8", frame_stack=K) as buf:
        for t in range(capacity):
            end = (t + 1) % EP_LEN == 0
            buf.add(0, frames[t % POOL], 0, 0.0, end, False, frames[0] if end else None)
        go, stop, q = ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=f, args=(buf.name, go, stop, q)) for f in (_writer, _sampler)]
        try:
            for p in procs:
                p.start()
            for _ in procs:  # both have imported and attached before the clock starts
                assert q.get(timeout=60)[0] == "ready"
            go.set()
            time.sleep(seconds)
            stop.set()
            res = dict(q.get(timeout=30) for _ in range(3))
            for p in procs:
                p.join(30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
    return res


# --- driver --------------------------------------------------------------------------------------


def spawn_peer(name: str, capacity: int, adds: int, fill: int, sample_s: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", name, "--capacity", str(capacity), "--adds", str(adds),
           "--fill", str(fill), "--sample-seconds", str(sample_s)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"peer": name, "error": " | ".join(tail) or f"exit code {p.returncode}"}
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under 30 s)")
    ap.add_argument("--capacity", type=int, default=100_000)
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--per-peers", default=",".join(PER_PEERS),
                    help="prioritized peers, a comma-separated subset of " + ",".join(PER_PEERS) + " ('' for none)")
    ap.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run one peer in this process
    ap.add_argument("--adds", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--fill", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sample-seconds", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cap = args.capacity

    if args.peer:
        run = run_per_peer if args.peer in PER_PEERS else run_peer
        print(json.dumps(run(args.peer, cap, args.adds, args.fill, args.sample_seconds)))
        return 0

    adds = 10_000 if args.quick else cap
    sample_s = 0.5 if args.quick else 3.0
    frame_limit = 1.1 * cap * FRAME_BYTES + (64 << 20)
    batch_bytes = 2 * BATCH * K * FRAME_BYTES
    t_start = time.perf_counter()

    bw = memcpy_bandwidth(0.3 if args.quick else 2.0)
    print(f"replay benchmark: {SHAPE[0]}x{SHAPE[1]} uint8, frame_stack {K}, capacity {cap:,}, batch {BATCH}"
          f"{' (quick)' if args.quick else ''}")
    print(f"memcpy bandwidth: {bw / 1e9:.2f} GB/s  -> sample(32) bound: {bw / batch_bytes:,.0f} batches/s "
          f"({batch_bytes / 1e6:.2f} MB written per batch)")

    results: dict[str, dict[str, Any]] = {}
    for name in [p for p in args.peers.split(",") if p]:
        peer_cap = min(cap, 20_000) if (args.quick and name in QUICK_SMALL) else cap
        results[name] = spawn_peer(name, peer_cap, min(adds, peer_cap - 1), peer_cap, sample_s)

    print(f"\n{'peer':<18}{'adds/s':>12}{'add MB/s':>10}{'batches/s':>11}{'sample GB/s':>13}{'RSS MB':>10}  note")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<18}  failed: {r['error']}")
            continue
        projected = r["capacity"] < cap
        mem = r["rss_bytes"] * cap / r["capacity"] if projected else r["rss_bytes"]
        note = f"projected from capacity {r['capacity']:,}" if projected else ""
        print(f"{name:<18}{r['adds_per_s']:>12,.0f}{r['adds_per_s'] * FRAME_BYTES / 1e6:>10,.0f}"
              f"{r['batches_per_s']:>11,.0f}{r['batches_per_s'] * batch_bytes / 1e9:>13.2f}{mem / 1e6:>10,.0f}  {note}")
        r["memory_bytes"] = mem

    ratios: dict[str, float] = {}
    rt = results.get("rtcore", {})
    if "error" not in rt and rt:
        for name, r in results.items():
            if name == "rtcore" or "error" in r:
                continue
            ratios[f"add_vs_{name}"] = rt["adds_per_s"] / r["adds_per_s"]
            ratios[f"sample_vs_{name}"] = rt["batches_per_s"] / r["batches_per_s"]
        ratios["sample_vs_memcpy_bound"] = rt["batches_per_s"] / (bw / batch_bytes)
        ratios["memory_vs_limit"] = rt["memory_bytes"] / frame_limit
        print("\nrtcore ratios (targets: add >= 10x cpprb, >= 1x numpy ring; sample >= 10x cpprb, >= 5x TorchRL, "
              ">= 1.2x numpy ring; memory <= 1.1 x frames + 64 MiB):")
        for k, v in ratios.items():
            print(f"  {k:<28}{v:8.2f}x")
        print(f"  memory: {rt['memory_bytes'] / 1e6:,.0f} MB of a {frame_limit / 1e6:,.0f} MB limit")

    per: dict[str, dict[str, Any]] = {}
    for name in [p for p in args.per_peers.split(",") if p]:
        peer_cap = min(cap, 20_000) if (args.quick and name in QUICK_SMALL) else cap
        per[name] = spawn_peer(name, peer_cap, min(adds, peer_cap - 1), peer_cap, sample_s)
    per_ratios: dict[str, float] = {}
    if per:
        print(f"\nprioritized (alpha {ALPHA}, beta {BETA}): sample(32) with weights, update_priorities(32), and both")
        print(f"{'peer':<22}{'adds/s':>10}{'samples/s':>11}{'updates/s':>11}{'sample+update/s':>17}"
              f"{'update p50/p99 us':>19}  note")
        for name, r in per.items():
            if "error" in r:
                print(f"{name:<22}  not run: {r['error']}")
                continue
            note = f"capacity {r['capacity']:,}" if r["capacity"] < cap else ""
            print(f"{name:<22}{r['adds_per_s']:>10,.0f}{r['batches_per_s']:>11,.0f}{r['updates_per_s']:>11,.0f}"
                  f"{r['sample_update_per_s']:>17,.0f}{r['update_us_p50']:>10.1f}/{r['update_us_p99']:<8.1f}  {note}")
        rp = per.get("rtcore_per", {})
        if rp and "error" not in rp:
            cpprb_best = max((r for n, r in per.items() if n.startswith("cpprb_per") and "error" not in r),
                             key=lambda r: r["sample_update_per_s"], default=None)
            if cpprb_best:
                per_ratios["sample_update_vs_cpprb"] = rp["sample_update_per_s"] / cpprb_best["sample_update_per_s"]
                per_ratios["sample_vs_cpprb"] = rp["batches_per_s"] / cpprb_best["batches_per_s"]
                per_ratios["update_vs_cpprb"] = rp["updates_per_s"] / cpprb_best["updates_per_s"]
                per_ratios["add_vs_cpprb"] = rp["adds_per_s"] / cpprb_best["adds_per_s"]
            tr = per.get("torchrl_per", {})
            if tr and "error" not in tr:
                per_ratios["sample_update_vs_torchrl"] = rp["sample_update_per_s"] / tr["sample_update_per_s"]
            if rp.get("uniform_batches_per_s"):
                per_ratios["uniform_over_prioritized_sample"] = rp["uniform_batches_per_s"] / rp["batches_per_s"]
            print(f"\nrtcore prioritized ratios (targets: sample+update >= 1.5x the faster cpprb"
                  f"{' (' + cpprb_best['peer'] + ')' if cpprb_best else ''}; uniform/prioritized sample <= 1.2x):")
            for k, v in per_ratios.items():
                print(f"  {k:<34}{v:8.2f}x")

    conc = {}
    if "rtcore" in results:
        conc = concurrent(min(cap, 20_000) if args.quick else cap, 1.0 if args.quick else 5.0)
        print(f"\nwriter process + sampler process at once (rtcore): {conc['adds_per_s']:,.0f} adds/s and "
              f"{conc['batches_per_s']:,.0f} batches/s; {conc['collisions']} draws redrawn after an overwrite")
    print(f"\n(total {time.perf_counter() - t_start:.1f} s; timings on a shared machine are noisy)")
    print(json.dumps({"benchmark": "replay", "quick": args.quick, "capacity": cap, "frame_bytes": FRAME_BYTES,
                      "frame_stack": K, "batch": BATCH, "memcpy_bytes_per_s": bw, "peers": results,
                      "ratios": ratios, "concurrent": conc, "memory_limit_bytes": frame_limit,
                      "prioritized": {"alpha": ALPHA, "beta": BETA, "peers": per, "ratios": per_ratios}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
