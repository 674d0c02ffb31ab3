"""Frozen workers: a worker's pass on the frozen module that follows new versions (``--backend frozen``)
against the pass workers run by default (``--backend script``).

Both sides run the worker's turn in this process, one torch thread, batch 1 (a 4 x 84 x 84 uint8 stack):
pick up the newest parameter version, forward pass, argmax. Meanwhile a publisher *process* writes a new
version into the ParamStore every ``--publish-interval`` seconds (default 0.25 s, the pace of a CPU
learner here; try 0.02 for a GPU learner's), as learners do in a run.

- ``script`` (the peer; what workers ran until now, at its best): TorchScript whose parameters are views
  of the pinned shared buffer (no copy per version), run by the plain executor
  (``torch.jit.optimized_execution(False)``; as fast here as the profiling one, and it never recompiles
  mid-run), argmax on the output.
- ``frozen``: :class:`rtcore.models.frozen.FrozenFollower`, what ``--backend frozen`` workers run: the frozen,
  oneDNN-optimized graph; a thread in the worker writes each new version into the spare copy's
  constants and the worker swaps it in at its next turn.
- ``frozen, fixed`` (reference, cannot learn): the same graph frozen once and never refreshed: the bound
  on what following versions can cost.

Printed: pass latency p50 and p99 (p99 only where a run has >= 10,000 passes: impala:k=1 outside
``--quick``), the ratio frozen / script (< 1: frozen is faster), the refresh time per version (in the
worker's refresh thread, off the pass), and the mean number of versions the frozen module trailed the
newest by at each turn, and the memory the two frozen copies add to a worker process (PSS, with one
pass run). Medians of 3 runs, interleaved. One JSON line at the end.

No other library runs workers that follow a learner's versions through shared memory, so the peer is
rtcore's own default path, the one the issue measured (k=7: 50.7 ms frozen against 58.0 ms).

Usage: python bench/frozen.py [--quick] [--models impala:k=1 impala:k=7] [--publish-interval 0.25]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", message=r"`torch\.jit.*` is deprecated", category=DeprecationWarning)


def _publisher(name: str, interval: float, stop: mp.Event, seed: int) -> None:
    """Another process, as a learner: a new version every ``interval`` s (each a small step from the last)."""
    from rtcore import ParamStore

    store = ParamStore.attach(name)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(store.numel, dtype=np.float32) * 0.05
    v = 0
    try:
        while not stop.is_set():
            v += 1
            store.publish(base * np.float32(1.0 + 1e-3 * v), timeout=1.0)
            stop.wait(interval)
    finally:
        store.close()


def _pss() -> int:
    """This process's proportional set size, bytes (what a worker's memory costs the machine)."""
    import psutil

    return int(psutil.Process().memory_full_info().pss)


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_once(spec: str, passes: int, interval: float, seed: int) -> dict:
    import torch

    from rtcore import ParamStore
    from rtcore.models import build_model, example_input
    from rtcore.models.export import load_for_inference
    from rtcore.models.frozen import FrozenFollower
    from rtcore.shared.params import ParamReader

    torch.manual_seed(seed)
    model = build_model(spec, 4, 6).eval()
    x = example_input(model, batch=1, seed=seed)
    numel = sum(p.numel() for p in model.parameters())
    store = ParamStore(numel, buffers=8)
    store.publish(model.parameters())
    ctx = mp.get_context("forkserver")
    stop = ctx.Event()
    pub = ctx.Process(target=_publisher, args=(store.name, interval, stop, seed), daemon=True)
    out: dict = {}
    try:
        scripted = load_for_inference(model, "cpu", backend="script")
        reader = ParamReader(store, scripted)
        template = load_for_inference(model, "cpu", backend="script")
        pss0 = _pss()
        follower = FrozenFollower(store, template, (x,), seed=seed)
        follower.start()
        with torch.inference_mode():
            follower.module(x)  # oneDNN's working memory too
        del template  # a worker drops the scripted module once its frozen copies are built
        out["frozen_extra_mib"] = (_pss() - pss0) / 2**20
        fixed = load_for_inference(model, "cpu", backend="script", frozen=True)
        pub.start()
        while store.version < 2:  # the publisher is running
            time.sleep(0.01)

        def script_pass() -> None:
            with reader.pinned():
                scripted(x).argmax(dim=1).item()

        lags: list[int] = []

        def frozen_pass() -> None:
            lags.append(follower.turn())
            follower.module(x).argmax(dim=1).item()

        def fixed_pass() -> None:
            fixed(x).argmax(dim=1).item()

        for name, fn in (("script", script_pass), ("frozen", frozen_pass), ("fixed", fixed_pass)):
            times = []
            v0, r0, s0 = store.version, follower.refreshes, follower.refresh_s
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                for i in range(passes + 5):
                    t0 = time.perf_counter()
                    fn()
                    t1 = time.perf_counter()
                    if i >= 5:
                        times.append(t1 - t0)
            out[name] = {"p50": _percentile(times, 50), "p99": _percentile(times, 99), "n": len(times),
                         "versions": store.version - v0}
            if name == "frozen":
                n = follower.refreshes - r0
                out[name]["refreshes"] = n
                out[name]["refresh_ms"] = 1e3 * (follower.refresh_s - s0) / n if n else float("nan")
                out[name]["lag_mean"] = statistics.fmean(lags) if lags else float("nan")
    finally:
        stop.set()
        if pub.pid is not None:
            pub.join(10)
        with contextlib.suppress(Exception):
            follower.close()
        with contextlib.suppress(Exception):
            reader.close()
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer passes (k=1: 2,000; k=7: 100)")
    ap.add_argument("--models", nargs="+", default=["impala:k=1", "impala:k=7"])
    ap.add_argument("--publish-interval", type=float, default=0.25, help="seconds between published versions")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import describe, load

    import torch

    torch.set_num_threads(1)
    start = load()
    results: dict = {}
    for spec in args.models:
        big = "k=1" not in spec and "mlp" not in spec and "minatar" not in spec
        passes = (100 if args.quick else 400) if big else (2_000 if args.quick else 10_000)
        runs = [run_once(spec, passes, args.publish_interval, seed) for seed in range(args.repeats)]
        med = {m: {k: statistics.median(r[m][k] for r in runs) for k in runs[0][m]} for m in ("script", "frozen", "fixed")}
        med["frozen_extra_mib"] = statistics.median(r["frozen_extra_mib"] for r in runs)
        med["ratio_p50"] = med["frozen"]["p50"] / med["script"]["p50"]
        med["ratio_p99"] = med["frozen"]["p99"] / med["script"]["p99"]
        med["fixed_ratio_p50"] = med["fixed"]["p50"] / med["script"]["p50"]
        med["passes"] = passes
        results[spec] = med
    end = load()
    print(f"worker pass (pick up the newest version + forward + argmax), batch 1, 1 thread; a version published "
          f"every {args.publish_interval:g} s by another process; medians of {args.repeats} runs")
    for spec, m in results.items():
        tail = m["passes"] >= 10_000
        p99 = lambda d: f", p99 {d['p99'] * 1e3:6.2f} ms" if tail else ""  # noqa: E731
        print(f"  {spec} ({m['passes']} passes per run)")
        print(f"    script (default workers): p50 {m['script']['p50'] * 1e3:6.2f} ms{p99(m['script'])}")
        print(f"    frozen, following versions: p50 {m['frozen']['p50'] * 1e3:6.2f} ms{p99(m['frozen'])}"
              f"  -> {m['ratio_p50']:.2f}x the script pass (p99 {m['ratio_p99']:.2f}x)" if tail else
              f"    frozen, following versions: p50 {m['frozen']['p50'] * 1e3:6.2f} ms  -> {m['ratio_p50']:.2f}x the script pass")
        print(f"      refresh {m['frozen']['refresh_ms']:.2f} ms per version (worker's refresh thread), "
              f"{m['frozen']['refreshes']:.0f} refreshes, mean lag {m['frozen']['lag_mean']:.2f} versions at a turn")
        print(f"    frozen once, fixed (cannot learn): p50 {m['fixed']['p50'] * 1e3:6.2f} ms ({m['fixed_ratio_p50']:.2f}x)")
        print(f"    memory of the two frozen copies (PSS growth of the worker process; script: views of shared "
              f"memory, none): {m['frozen_extra_mib']:.0f} MiB")
    print(describe(start, end))
    print(json.dumps({"bench": "frozen", "publish_interval": args.publish_interval, "repeats": args.repeats,
                      "results": results, "machine": {"start": start, "end": end}}))


if __name__ == "__main__":
    main()
