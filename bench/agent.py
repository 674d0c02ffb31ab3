"""The table the paper's argument rests on, measured on this machine: model size -> inaction.

For each Impala width k (default 1, 7, 29) on the CPU (and CUDA when available):

- tau_theta: measured batch-1 inference time (p99, one thread, TorchScript), as a worker computes it;
- N* = ceil(tau_theta / tau_M) at Game Boy speed (tau_M = 1 / 59.7275 s);
- inaction fraction of the sequential agent vs the staggered one with N* workers, on a real
  ``rtcore run`` (realtime Pong stepped at 59.7275 Hz, acting only, so the figure is inference alone).
  Where N* workers running the real model do not fit the machine's cores (each one computes all the
  time), the run uses the small model plus ``--inference-delay`` to emulate tau_theta (source
  "emulated"); where even that needs more processes than ``--max-procs``, only the simulator's
  prediction is given (source "simulated"). The simulator's prediction is printed next to every
  measured figure.

Then learner updates/s for M = 1, 2 (and more where cores allow) on the k=1 model.

Ends with one JSON line of all figures. ``--quick`` shortens every run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

GAME_BOY_HZ = 59.7275


def simulate_inaction(tau_theta: float, tau_m: float, workers: int, mode: str, steps: int, seed: int = 0) -> float:
    import rtcore

    r = rtcore.simulate(tau_m=tau_m, tau_theta=tau_theta, workers=workers, mode=mode, steps=steps, seed=seed)
    return float(r.inaction_fraction)


def real_inaction(model: str, mode: str, workers: int, seconds: float, inference_delay: float, tau_theta: float,
                  device: str, realtime: bool) -> dict:
    import rtcore

    with tempfile.TemporaryDirectory() as d:
        cfg = rtcore.RunConfig(env="ALE/Pong-v5", frequency=GAME_BOY_HZ, model=model, mode=mode,
                               workers=str(workers), max_workers=max(64, workers), learners=0, seconds=seconds,
                               inference_delay=inference_delay, tau_theta=tau_theta, device=device,
                               frame_stack=1, run_dir=d, plots=False, tensorboard=False, quiet=True,
                               latency_iters=20, epsilon_decay_steps=0, epsilon_end=0.0, realtime=realtime)
        s = rtcore.run(cfg)
        return s.to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,7,29", help="Impala widths k (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="short runs (about 6 s each)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per realtime run (default: %(default)s)")
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when available)")
    p.add_argument("--max-procs", type=int, default=8, help="most worker processes an emulated run may spawn")
    p.add_argument("--learners", default="1,2", help="learner counts M for updates/s (default: %(default)s)")
    p.add_argument("--no-realtime", dest="realtime", action="store_false",
                   help="do not ask for SCHED_FIFO for the env and the workers (asked for by default; a refusal is "
                        "reported, and then a busy machine's stalls raise Algorithm 1's tau_max for the whole run)")
    args = p.parse_args(argv)

    import torch

    from rtcore import n_star
    from rtcore.agent.learner import measure_updates_per_second
    from rtcore.models.export import measure_latency

    seconds = 6.0 if args.quick else args.seconds
    iters = 20 if args.quick else 100
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cores = len(os.sched_getaffinity(0))
    tau_m = 1.0 / GAME_BOY_HZ
    ks = [float(k) for k in args.ks.split(",")]
    rows = []
    print(f"# realtime inaction at Game Boy speed (tau_M = {tau_m * 1e3:.2f} ms), {cores} cores; timings are noisy "
          f"on a shared machine", flush=True)
    hdr = (f"{'device':6} {'k':>4} {'params':>12} {'tau_theta p50/p99 ms':>21} {'N*':>4} {'source':>9} "
           f"{'seq inaction':>13} {'(sim)':>7} {'stag inaction':>14} {'(sim)':>7} {'ratio':>7}")
    print(hdr)
    for device in devices:
        for k in ks:
            spec = f"impala:k={k:g}"
            lat = measure_latency(spec, device, iters=iters, warmup=3, in_frames=1, n_actions=6, threads=1)
            tau = lat["p99"]
            n = int(n_star(tau, tau_m))
            # long enough that the start-up (the first tau_theta without any action) is negligible, as the
            # measured figures exclude it
            sim_steps = max(20_000, int(1000 * tau / tau_m))
            sim_seq = simulate_inaction(tau, tau_m, 1, "sequential", sim_steps)
            sim_stag = simulate_inaction(tau, tau_m, n, "max", sim_steps)
            # real model fits when each of the N* busy workers gets a core besides the env's
            if device == "cuda" or n + 1 <= cores:
                source, model, delay = "measured", spec, 0.0
            elif n <= args.max_procs:
                source, model, delay = "emulated", "impala:k=1", max(0.0, tau - _small_tau(device))
            else:
                source = "simulated"
            if source == "simulated":
                seq = stag = math.nan
            else:
                rs = real_inaction(model, "sequential", 1, seconds, delay, tau, device, args.realtime)
                rg = real_inaction(model, "staggered", n, seconds, delay, tau, device, args.realtime)
                seq, stag = rs["inaction_fraction_steady"], rg["inaction_fraction_steady"]
            shown_seq = seq if source != "simulated" else sim_seq
            shown_stag = stag if source != "simulated" else sim_stag
            ratio = shown_seq / shown_stag if shown_stag and shown_stag > 0 else math.inf
            rows.append({"device": device, "k": k, "params": lat["params"], "tau_theta_p50": lat["p50"],
                         "tau_theta_p99": tau, "n_star": n, "source": source, "sequential_inaction": seq,
                         "staggered_inaction": stag, "sim_sequential_inaction": sim_seq,
                         "sim_staggered_inaction": sim_stag})
            print(f"{device:6} {k:>4g} {lat['params']:>12,} {lat['p50'] * 1e3:>10.2f}/{tau * 1e3:<10.2f} {n:>4} "
                  f"{source:>9} {_pct(shown_seq):>13} {_pct(sim_seq):>7} {_pct(shown_stag):>14} {_pct(sim_stag):>7} "
                  f"{ratio:>7.1f}", flush=True)
    print("# inaction = default-action steps / steps after start-up, acting only (learning would add to sequential's "
          "idling); "
          "(sim) = rtcore.simulate at the same tau_theta")
    print("# source: measured = real model in N* workers; emulated = k=1 model + --inference-delay to reach tau_theta; "
          "simulated = rtcore.simulate only (N* workers do not fit this machine)")

    print("\n# learner updates/s (impala:k=1, batch 32, 4 frames), round-robin with shared Adam")
    updates = []
    base = None
    for m in [int(x) for x in args.learners.split(",")]:
        r = measure_updates_per_second("impala:k=1", m, seconds=3.0 if args.quick else 10.0)
        base = base or r["updates_per_s"]
        updates.append(r)
        print(f"M={m}: {r['updates_per_s']:8.1f} updates/s  ({r['updates_per_s'] / base:.2f}x M=1)  "
              f"grad {r['grad_ms']:.1f} ms, apply {r['apply_ms']:.2f} ms, staleness {r['staleness']:.2f} versions",
              flush=True)
    print(json.dumps(_clean({"bench": "agent", "tau_m": tau_m, "cores": cores, "inaction": rows, "learners": updates,
                             "quick": args.quick})))
    return 0


_SMALL: dict[str, float] = {}


def _small_tau(device: str) -> float:
    """Median latency of the k=1 model, which emulated runs stand on."""
    if device not in _SMALL:
        from rtcore.models.export import measure_latency

        _SMALL[device] = measure_latency("impala:k=1", device, iters=20, warmup=3, in_frames=1, threads=1)["p50"]
    return _SMALL[device]


def _clean(x):
    """NaN -> None, so the JSON line is strict JSON."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
