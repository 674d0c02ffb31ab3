"""Measure the figures the runner sizes itself by: ``rtcore bench models``.

``rtcore bench models`` times one action (frames to device -> forward -> argmax -> action on the host) at
batch 1 for each model spec, backend and device, as an inference worker computes it (one CPU thread),
and prints p50/p99 per model. The runner takes p99 as tau_theta_max to size the number of workers:
N* = ceil(tau_theta_max / tau_M). With ``--json`` it ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rtcore._validate import OPTION_ERRORS, bad_option

__all__ = ["add_arguments", "main", "bench_models", "check_models_options"]

GAME_BOY_HZ = 59.7275
DEFAULT_MODELS = ("impala:k=1", "impala:k=7", "nature")
# backend label -> (backend, frozen)
BACKEND_LABELS: dict[str, tuple[str, bool]] = {
    "eager": ("eager", False),
    "script": ("script", False),
    "frozen": ("script", True),
    "export": ("export", False),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    p = sub.add_parser("models", help="batch-1 inference latency (p50/p99) per model, backend and device",
                       description="Batch-1 inference latency (p50/p99) per model, backend and device.")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="SPEC",
                   help="model specs, space- or ';'-separated (default: %(default)s)")
    p.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"],
                   help="device(s) to time on (default: cpu)")
    p.add_argument("--backends", default="script,frozen",
                   help="comma-separated, of eager, script, frozen (script + freeze + optimize_for_inference), "
                        "export; the first is the baseline of the ratio column (default: %(default)s)")
    p.add_argument("--iters", type=int, default=100, help="timed iterations per row (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default: %(default)s)")
    p.add_argument("--in-frames", type=int, default=1, help="frames per observation (default: %(default)s)")
    p.add_argument("--n-actions", type=int, default=6, help="actions (default: %(default)s, the Game Boy set)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, as in a worker (default: %(default)s)")
    p.add_argument("--env-hz", type=float, default=GAME_BOY_HZ,
                   help="environment rate for the N* column (default: Game Boy, %(default)s)")
    p.add_argument("--quick", action="store_true", help="20 iterations, 3 warmup")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(_bench=_main_models)


def main(args: argparse.Namespace) -> int:
    return int(args._bench(args))


def check_models_options(models: list[str], devices: list[str], backends: list[str]) -> None:
    """``ValueError`` naming the first unknown backend, bad model spec or unavailable device."""
    from rtcore.models import parse_model_spec

    for b in backends:
        if b not in BACKEND_LABELS:
            raise ValueError(f"unknown backend {b!r}; expected some of {', '.join(BACKEND_LABELS)}")
    for spec in models:
        parse_model_spec(spec)
    if "cuda" in devices:
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but torch.cuda.is_available() is False")


def bench_models(models: list[str], devices: list[str], backends: list[str], iters: int, warmup: int,
                 in_frames: int = 1, n_actions: int = 6, threads: int = 1,
                 env_hz: float = GAME_BOY_HZ) -> list[dict[str, Any]]:
    """One row per (device, model, backend): the dict of :func:`rtcore.models.export.measure_latency`
    plus ``label`` (backend label), ``ratio`` (p50 of the first backend / this p50) and ``n_star``
    (ceil(p99 * env_hz))."""
    import torch

    from rtcore.models import build_model
    from rtcore.models.export import measure_latency

    check_models_options(models, devices, backends)  # fail before timing anything
    rows: list[dict[str, Any]] = []
    for device in devices:
        for spec in models:
            torch.manual_seed(0)
            model = build_model(spec, in_frames, n_actions)
            base_p50 = None
            for label in backends:
                backend, frozen = BACKEND_LABELS[label]
                r = measure_latency(model, device, 1, iters, warmup, backend=backend, frozen=frozen,
                                    threads=threads)
                base_p50 = base_p50 or r["p50"]
                r.update(label=label, ratio=base_p50 / r["p50"], n_star=max(1, math.ceil(r["p99"] * env_hz)))
                rows.append(r)
            del model
    return rows


def _main_models(args: argparse.Namespace) -> int:
    # Specs hold commas (impala:k=7,deep=1), so they are separated by spaces (also inside one quoted
    # argument) or ';'.
    models = [m for item in args.models for m in item.replace(";", " ").split()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    iters, warmup = (20, 3) if args.quick else (args.iters, args.warmup)
    try:
        check_models_options(models, args.device, backends)
    except OPTION_ERRORS as exc:
        return bad_option("rtcore bench models", exc)
    rows = bench_models(models, args.device, backends, iters, warmup, args.in_frames, args.n_actions,
                        args.threads, args.env_hz)
    header = f"{'model':<28} {'params':>14} {'device':<6} {'backend':<8} {'p50 ms':>9} {'p99 ms':>9} " \
             f"{'mean ms':>9} {'x ' + backends[0]:>9} {'N*':>5}"
    print(f"batch-1 latency, {iters} iterations, {args.threads} thread(s); N* at {args.env_hz:g} Hz")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['spec']:<28} {r['params']:>14,} {r['device']:<6} {r['label']:<8} {r['p50'] * 1e3:>9.3f} "
              f"{r['p99'] * 1e3:>9.3f} {r['mean'] * 1e3:>9.3f} {r['ratio']:>9.2f} {r['n_star']:>5}")
    if args.json:
        out = {"bench": "models", "iters": iters, "threads": args.threads, "env_hz": args.env_hz,
               "results": [{"spec": r["spec"], "params": r["params"], "device": r["device"], "backend": r["label"],
                            "p50_ms": r["p50"] * 1e3, "p99_ms": r["p99"] * 1e3, "mean_ms": r["mean"] * 1e3,
                            "ratio": r["ratio"], "n_star": r["n_star"]} for r in rows]}
        print(json.dumps(out))
    return 0
