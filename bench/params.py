"""Parameter-store benchmark: what it costs a worker to pick up a new version, and a learner to publish one.

For Impala CNNs of width k (CPU, one thread), per new version:

- pickup, rtcore: ``ParamReader.acquire()`` + ``release()`` after each publish, on a scripted worker whose
  parameters are views of shared memory (zero copy: pin + re-point the parameter tensors);
- pickup, copy peer: one copy (``bind_flat(private).copy_``) of the same version into the worker's own parameters (what a worker
  with private parameters must do: ``load_state_dict``-style copy);
- publish, rtcore: ``store.publish(model.parameters())`` (copies each parameter into a free buffer);
- the bound: a numpy memcpy of the same bytes.

Prints a table with the ratios (copy / zero-copy pickup, publish / memcpy) and ends with one JSON line.

Usage: python bench/params.py [--quick] [--models impala:k=1 impala:k=7 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from rtcore import ParamStore
from rtcore.models import build_model
from rtcore.models.export import load_for_inference
from rtcore.shared.params import ParamReader, bind_flat


def _time(fn, iters: int) -> float:
    """Median seconds of fn() over iters runs (after one warm-up run)."""
    fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_model(spec: str, iters: int) -> dict:
    torch.manual_seed(0)
    learner = build_model(spec, 1, 6)
    worker = load_for_inference(learner, "cpu", backend="script")
    private = load_for_inference(learner, "cpu", backend="script")
    nbytes = sum(p.numel() for p in learner.parameters()) * 4
    with ParamStore.for_module(learner, buffers=4) as store:
        reader = ParamReader(store, worker)
        params = list(learner.parameters())

        def pickup_zero_copy() -> float:
            store.publish(params)  # a new version each time (untimed), so the reader really switches buffers
            t0 = time.perf_counter()
            reader.acquire()
            reader.release()
            return time.perf_counter() - t0

        def publish_only() -> None:
            store.publish(params)

        flat = bind_flat(learner).detach().clone()
        private_flat = bind_flat(private)

        def pickup_copy() -> None:
            private_flat.copy_(flat)

        src = np.empty(nbytes // 4, np.float32)
        dst = np.empty_like(src)

        def memcpy() -> None:
            np.copyto(dst, src)

        with torch.no_grad():
            t_publish = _time(publish_only, iters)
            pickup_zero_copy()
            t_pick_zero = statistics.median(pickup_zero_copy() for _ in range(iters))
            t_pick_copy = _time(pickup_copy, iters)
        t_memcpy = _time(memcpy, iters)
        reader.close()
    return {"spec": spec, "bytes": nbytes, "pickup_zero_copy_s": t_pick_zero, "pickup_copy_s": t_pick_copy,
            "publish_s": t_publish, "memcpy_s": t_memcpy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="impala:k=1 and k=7, 10 iterations")
    ap.add_argument("--models", nargs="+", default=["impala:k=1", "impala:k=7", "impala:k=29"])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    models, iters = (["impala:k=1", "impala:k=7"], 10) if args.quick else (args.models, args.iters)
    torch.set_num_threads(1)
    rows = [bench_model(m, iters) for m in models]
    print(f"{'model':<14} {'MB':>8} {'pickup 0-copy':>14} {'pickup copy':>12} {'ratio':>7} "
          f"{'publish':>10} {'memcpy':>10} {'ratio':>7}")
    for r in rows:
        zero = r["pickup_zero_copy_s"]
        print(f"{r['spec']:<14} {r['bytes'] / 1e6:>8.1f} {zero * 1e6:>12.1f}us {r['pickup_copy_s'] * 1e3:>10.2f}ms "
              f"{r['pickup_copy_s'] / zero:>7.0f} {r['publish_s'] * 1e3:>8.2f}ms {r['memcpy_s'] * 1e3:>8.2f}ms "
              f"{r['publish_s'] / r['memcpy_s']:>7.2f}")
    print(json.dumps({"bench": "params", "iters": iters, "results": rows}))


if __name__ == "__main__":
    main()
