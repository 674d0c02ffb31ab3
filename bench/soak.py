"""Soak: a long ``rtcore run`` with faults injected at random; do memory, fds and /dev/shm stay flat?

    python bench/soak.py            # 30 minutes
    python bench/soak.py --quick    # 2 minutes

The run: Pong, impala:k=1, ``--inference-delay`` making N* = 3, 3 workers and 2 learners, respawn on.
While it runs, faults are injected at random instants (exponential gaps, seeded): SIGKILL of a worker
or a learner (respawned by the runner), SIGSTOP of a worker or a learner for 0.5-3 s then SIGCONT
(a stall). Every ``--sample`` seconds the bench records, over the runner and all its descendants:
proportional set size (PSS: each shared page divided among the processes that map it, so the sum is
the memory the run really holds, shared-memory segments included), open file descriptors, the number of processes, and the bytes and number of the
run's segments in /dev/shm (the run gets its own segment prefix).

"Flat" is judged on the samples where every process is up (not in the gap between a SIGKILL and the
respawn) after a warm-up (the first 25 % of the samples, and at least until the replay buffer
is full and 20 s more: a filling buffer is growth by design): the least-squares slope, extrapolated over the whole run, must stay under 5 % of the mean (RSS),
under 1 descriptor (fds) and exactly 0 (/dev/shm bytes). There is no peer to compare a soak with; the
ratio printed for each resource is its mean over the last quarter of the samples to its mean over the
first quarter after warm-up (1.00 = flat). At the end the run is stopped with SIGTERM (a fault too:
exit code 143 expected) and the bench checks that no process and no segment of it is left.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample(pid: int, prefix: str, kinds: dict[int, str]) -> dict[str, float]:
    rss = fds = n = 0
    by_kind: dict[str, float] = {}
    for p in tree(pid):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            pss = p.memory_full_info().pss
            rss += pss
            k = "pss_" + kinds.get(p.pid, "runner")
            by_kind[k] = by_kind.get(k, 0) + pss
            fds += p.num_fds()
            n += 1
        except psutil.NoSuchProcess:
            continue
    shm_bytes = shm_n = 0
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix + "-"):
            try:
                shm_bytes += os.stat(f"/dev/shm/{name}").st_size
                shm_n += 1
            except FileNotFoundError:
                pass
    return {"t": time.monotonic(), "pss": rss, "fds": fds, "procs": n, "shm_bytes": shm_bytes, "shm_n": shm_n,
            **{k: by_kind.get(k, 0) for k in ("pss_runner", "pss_env", "pss_worker", "pss_learner")}}


def children_of_run(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "processes.json").read_text())["children"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def inject(rng: random.Random, run_dir: Path, stop_until: dict[int, float], log: list[dict]) -> None:
    kids = [c for c in children_of_run(run_dir) if c["kind"] in ("worker", "learner")]
    if not kids:
        return
    victim = rng.choice(kids)
    kind = rng.choice(["kill", "kill", "stop"])
    pid = victim["pid"]
    try:
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
            log.append({"fault": "SIGKILL", "kind": victim["kind"], "index": victim["index"]})
        else:
            secs = rng.uniform(0.5, 3.0)
            os.kill(pid, signal.SIGSTOP)
            stop_until[pid] = time.monotonic() + secs
            log.append({"fault": "SIGSTOP", "kind": victim["kind"], "index": victim["index"], "seconds": round(secs, 2)})
    except ProcessLookupError:  # it died a moment ago (and is being respawned)
        pass


def slope_check(xs: np.ndarray, ys: np.ndarray, span: float) -> tuple[float, float]:
    """(slope per hour, growth extrapolated over `span` seconds)."""
    if len(xs) < 3 or np.ptp(xs) == 0:
        return 0.0, 0.0
    a = np.polyfit(xs, ys, 1)[0]
    return float(a * 3600.0), float(a * span)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 minutes instead of 30")
    ap.add_argument("--minutes", type=float, default=None, help="soak length (default 30, --quick 2)")
    ap.add_argument("--sample", type=float, default=None, help="seconds between samples (default 10, --quick 2)")
    ap.add_argument("--fault-every", type=float, default=None, help="mean seconds between faults (default 30, --quick 10)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    minutes = args.minutes if args.minutes is not None else (2.0 if args.quick else 30.0)
    every = args.sample if args.sample is not None else (2.0 if args.quick else 10.0)
    fault_mean = args.fault_every if args.fault_every is not None else (10.0 if args.quick else 30.0)
    seconds = minutes * 60.0
    capacity = 1000 if args.quick else 20000  # full after ~17 s / ~5.6 min of Pong at 60 Hz
    rng = random.Random(args.seed)
    prefix = f"rtcoresoak{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="rtcore-soak-"))
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "rtcore", "run", "--run-dir", str(run_dir), "--json", "--no-tensorboard", "--no-plots",
           "--env", "ALE/Pong-v5", "--model", "impala:k=1", "--frame-stack", "2", "--replay-capacity", str(capacity),
           "--latency-iters", "20", "--inference-delay", "0.025", "--tau-theta", "0.04", "--workers", "3",
           "--learners", "2", "--learning-starts", "200", "--batch-size", "16", "--updates-per-step", "0.05",
           "--metrics-interval", "2", "--checkpoint-interval", "60", "--seconds", str(seconds + 600)]
    env = {**os.environ, "RTCORE_SHM_PREFIX": prefix, "PYTHONUNBUFFERED": "1"}
    print(f"soak: {minutes:g} min, sample every {every:g} s, a fault every ~{fault_mean:g} s; run dir {run_dir}",
          file=sys.stderr, flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    samples: list[dict] = []
    faults: list[dict] = []
    stop_until: dict[int, float] = {}
    everyone: set[int] = set()
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "processes.json").exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"soak: the run did not start: {p.stderr.read()[-3000:]}")
            time.sleep(0.2)
        t0 = time.monotonic()
        next_sample = t0
        next_fault = t0 + rng.expovariate(1.0 / fault_mean)
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            for pid, until in list(stop_until.items()):
                if now >= until:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                    del stop_until[pid]
            if now >= next_fault:
                inject(rng, run_dir, stop_until, faults)
                next_fault = now + rng.expovariate(1.0 / fault_mean)
            if now >= next_sample:
                s = sample(p.pid, prefix, {c["pid"]: c["kind"] for c in children_of_run(run_dir)})
                s["t"] -= t0
                samples.append(s)
                everyone.update(q.pid for q in tree(p.pid))
                next_sample += every
            if p.poll() is not None:
                raise SystemExit(f"soak: the run ended early (exit {p.returncode}): {p.stderr.read()[-3000:]}")
            time.sleep(0.05)
        for pid in stop_until:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        everyone.update(q.pid for q in tree(p.pid))
        procs = [q for q in tree(p.pid)]
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            for q in tree(p.pid)[::-1]:
                q.kill()
            p.wait()
    _, alive = psutil.wait_procs(procs, timeout=10)
    left_procs = [q.pid for q in alive if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]
    left_segments = [n for n in os.listdir("/dev/shm") if n.startswith(prefix + "-")]
    lines = [line for line in out.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}

    warm_s = max(0.25 * seconds, capacity / 60.0 + 20.0)
    warm = next((i for i, s in enumerate(samples) if s["t"] >= warm_s), len(samples) - 3)
    # judged on the samples where every process is up: a sample in the second between a SIGKILL and its
    # respawn is missing one process's memory and fds, which is no leak and no saving
    full = max(s["procs"] for s in samples[warm:])
    S = [s for s in samples[warm:] if s["procs"] == full]
    xs = np.array([s["t"] for s in S])
    q = max(1, len(S) // 4)
    res = {}
    ok_all = True
    for key, unit, scale, limit in (("pss", "MiB", 2**20, "5% of mean"), ("fds", "", 1, "1"), ("shm_bytes", "MiB", 2**20, "0"),
                                    ("procs", "", 1, "-"), ("pss_runner", "MiB", 2**20, "-"), ("pss_env", "MiB", 2**20, "-"),
                                    ("pss_worker", "MiB", 2**20, "-"), ("pss_learner", "MiB", 2**20, "-")):
        ys = np.array([s[key] for s in S], dtype=float) / scale
        per_h, growth = slope_check(xs, ys, seconds)
        ratio = float(ys[-q:].mean() / ys[:q].mean()) if ys[:q].mean() else float("nan")
        if key == "pss":
            flat = abs(growth) < 0.05 * ys.mean()
        elif key == "fds":
            flat = abs(growth) < 1.0
        elif key == "shm_bytes":
            flat = bool(np.ptp(ys) == 0)
        else:
            flat = True
        ok_all &= bool(flat)
        res[key] = {"start": float(ys[:q].mean()), "end": float(ys[-q:].mean()), "min": float(ys.min()),
                    "max": float(ys.max()), "slope_per_h": per_h, "end_over_start": ratio, "flat": bool(flat)}
        print(f"  {key:10s} {ys[:q].mean():10.1f} -> {ys[-q:].mean():10.1f} {unit:4s} (min {ys.min():.1f}, max "
              f"{ys.max():.1f}); slope {per_h:+.2f} {unit}/h; end/start {ratio:.3f}; flat ({limit}): {flat}",
              file=sys.stderr)
    counts: dict[str, int] = {}
    for f in faults:
        k = f"{f['fault']} {f['kind']}"
        counts[k] = counts.get(k, 0) + 1
    clean_exit = p.returncode == 143 and not left_procs and not left_segments
    print(f"  faults injected: {counts}; run exit {p.returncode} (143 expected), processes left {len(left_procs)}, "
          f"segments left {len(left_segments)}; run faults recorded: {len(summary.get('faults', []))}", file=sys.stderr)
    result = {
        "bench": "soak", "quick": bool(args.quick), "minutes": minutes, "samples": len(samples), "warmup_samples": warm,
        "judged_samples": len(S),
        "faults_injected": counts, "resources": res, "flat": ok_all, "run_exit": p.returncode,
        "clean_exit": clean_exit, "left_processes": len(left_procs), "left_segments": len(left_segments),
        "run": {k: summary.get(k) for k in ("stopped_by", "env_steps", "inaction_fraction", "worker_restarts",
                                             "learner_restarts", "learner_updates", "param_version", "stalls",
                                             "workers_lost", "learners_lost")},
        "run_faults_recorded": len(summary.get("faults", [])),
    }
    print(json.dumps(result))
    return 0 if ok_all and clean_exit else 1


if __name__ == "__main__":
    sys.exit(main())
