"""``rtcore repro``: the paper's experiments (arXiv 2412.14355) as commands, each writing a figure, a CSV
and one JSON line.

    rtcore repro inaction --quick --out repro-out --json
    rtcore repro scaling --quick
    rtcore repro delay-learning --quick

* ``inaction``: inaction and the spread of the action interval against the number of inference workers
  N, for tau_theta = 1, 5, 8, 70, 596 frames (tau_M = 1/59.7275 s, inference times normal with a 10 %
  sd), max (Algorithm 1) and mean (Algorithm 2) staggering, in the simulator and on the wall clock
  (spawned workers with emulated latency; ``--quick``: tau_theta <= 8 frames and N <= 12 only), with the
  theory line ``max(0, 1 - N tau_M / tau_theta)``.
* ``scaling``: inference and learning processes needed against parameter count (Impala k = 1, 7, 29,
  98), from measured latencies (``rtcore.models.export.measure_latency`` and a timed DQN update; CUDA
  when present). ``--quick`` measures k = 1, 7 and extrapolates k = 29, 98 linearly in the parameter
  count (said so in the CSV, JSON and figure).
* ``delay-learning``: see :mod:`rtcore.repro.learning`.

``--quick`` sizes run in minutes on a 2-core machine; the default is the full size for a bigger machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Any

__all__ = ["add_arguments", "main", "inaction", "scaling", "EXPERIMENTS", "PAPER_FRAMES"]

from rtcore.repro._common import EXPERIMENTS, IMPALA_K, JITTER, PAPER_FRAMES, PAPER_POKEMON, TAU_M, UPDATE_EVERY, pyplot, write_csv


def _n_grid(frames: int, quick: bool) -> list[int]:
    fr = (0.25, 0.5, 0.75, 1.0, 1.15, 1.3, 1.45) if quick else (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
    return sorted({max(1, round(x * frames)) for x in fr} | {frames, math.ceil(1.4 * frames)})


def _wall_grid(frames: int, quick: bool) -> list[int]:
    if quick:
        return {1: [1, 2], 5: [3, 5, 7], 8: [4, 8, 10, 12]}.get(frames, [])
    if frames > 70:
        return []  # 596 frames needs ~830 worker processes: simulator only
    return sorted({max(1, round(x * frames)) for x in (0.5, 1.0, 1.15, 1.3, 1.45)})


def inaction(quick: bool, out: str, seeds: int = 3) -> dict[str, Any]:
    """Simulator (all five tau_theta, medians of ``seeds`` seeds) and wall clock; figure + CSV."""
    from rtcore.simulation import simulate

    rows: list[dict[str, Any]] = []
    for f in PAPER_FRAMES:
        tau = f * TAU_M
        steps = max(20000 if quick else 100000, 60 * f)
        for n in _n_grid(f, quick):
            for mode in ("max", "mean"):
                rs = [simulate(TAU_M, tau, n, mode=mode, steps=steps, seed=s, tau_theta_dist=f"normal:{JITTER * tau}")
                      for s in range(seeds)]
                rows.append({"source": "simulator", "frames": f, "n": n, "mode": mode,
                             "inaction": statistics.median(r.inaction_fraction for r in rs),
                             "late_inaction": statistics.median(r.late_inaction_fraction for r in rs),
                             "interval_cv": statistics.median(r.action_interval_cv for r in rs),
                             "tau_max_frames": statistics.median(r.tau_max_final for r in rs) / TAU_M,
                             "theory": max(0.0, 1 - n * TAU_M / tau), "steps": steps, "seeds": seeds})
    wall = [(f, n) for f in PAPER_FRAMES for n in _wall_grid(f, quick)]
    if wall:
        from rtcore.repro.wallclock import WallclockPool

        with WallclockPool(max(n for _, n in wall)) as pool:
            for f, n in wall:
                tau = f * TAU_M
                ticks = 240 if quick else max(1200, int(20 * f))
                for mode in ("max", "mean"):
                    r = pool.run(tau, n, mode, ticks=ticks, jitter=JITTER, seed=0)
                    rows.append({"source": "wallclock", "frames": f, "n": n, "mode": mode, "inaction": r["inaction"],
                                 "late_inaction": r["inaction"], "interval_cv": r["interval_cv"],
                                 "tau_max_frames": r["tau_max"] / TAU_M, "theory": max(0.0, 1 - n * TAU_M / tau),
                                 "steps": ticks, "seeds": 1})
    os.makedirs(out, exist_ok=True)
    csv_path, fig_path = os.path.join(out, "inaction.csv"), os.path.join(out, "inaction.png")
    write_csv(csv_path, rows)
    _plot_inaction(rows, fig_path)
    sim = [r for r in rows if r["source"] == "simulator"]
    pairs = {(r["frames"], r["n"]): {} for r in sim}
    for r in sim:
        pairs[(r["frames"], r["n"])][r["mode"]] = r
    mean_le_max = all(p["mean"]["inaction"] <= p["max"]["inaction"] + 1e-12 for p in pairs.values())
    enough = [p for p in pairs.values() if p["max"]["n"] >= math.ceil(p["max"]["tau_max_frames"] - 1e-9)]
    under_1pct = all(p[m]["late_inaction"] <= 0.01 for p in enough for m in ("max", "mean"))
    return {"experiment": "inaction", "quick": quick, "figure": fig_path, "csv": csv_path, "rows": len(rows),
            "wallclock_settings": len(wall), "mean_le_max_sim": mean_le_max,
            "under_1pct_steady_at_n_ge_tau_max_sim": under_1pct}


def _plot_inaction(rows: list[dict[str, Any]], path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(PAPER_FRAMES), figsize=(3.2 * len(PAPER_FRAMES), 5.6), squeeze=False)
    style = {"max": ("tab:blue", "Algorithm 1 (max)"), "mean": ("tab:orange", "Algorithm 2 (mean)")}
    for j, f in enumerate(PAPER_FRAMES):
        top, bot = axes[0][j], axes[1][j]
        for mode, (color, label) in style.items():
            sim = sorted((r for r in rows if r["source"] == "simulator" and r["frames"] == f and r["mode"] == mode),
                         key=lambda r: r["n"])
            wall = [r for r in rows if r["source"] == "wallclock" and r["frames"] == f and r["mode"] == mode]
            top.plot([r["n"] for r in sim], [r["inaction"] for r in sim], "-", color=color, label=f"{label}, simulator")
            bot.plot([r["n"] for r in sim], [r["interval_cv"] for r in sim], "-", color=color)
            if wall:
                top.plot([r["n"] for r in wall], [r["inaction"] for r in wall], "o", color=color, mfc="none",
                         label=f"{label}, wall clock")
                bot.plot([r["n"] for r in wall], [r["interval_cv"] for r in wall], "o", color=color, mfc="none")
        ns = sorted({r["n"] for r in rows if r["frames"] == f})
        top.plot(ns, [max(0.0, 1 - n / f) for n in ns], "k--", lw=0.8, label="max(0, 1 - N tau_M / tau_theta)")
        top.set_title(f"tau_theta = {f} frames")
        top.set_ylim(-0.02, 1.0)
        bot.set_xlabel("inference workers N")
        bot.set_ylim(bottom=0)
        if j == 0:
            top.set_ylabel("inaction (fraction of steps)")
            bot.set_ylabel("action interval CV")
    axes[0][0].legend(fontsize=6, loc="upper right")
    fig.suptitle("Inaction vs N (inference ~ normal, 10 % sd; tau_M = 1/59.7275 s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --- scaling ----------------------------------------------------------------------------------------


def time_update(spec: str, device: str, batch: int = 32, iters: int = 3, in_frames: int = 1, n_actions: int = 6) -> float:
    """Median seconds of one DQN update (forward + backward + Adam step on ``batch`` frames) of ``spec``."""
    import torch

    from rtcore.models import build_model, example_input

    torch.manual_seed(0)
    model = build_model(spec, in_frames, n_actions).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = example_input(model, batch=batch).to(device)
    a = torch.zeros(batch, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        loss = model(x).gather(1, a.unsqueeze(1)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i:  # the first is warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scaling(quick: bool, out: str, device: str | None = None) -> dict[str, Any]:
    """Inference workers ``ceil(p99 / tau_M)`` and learners ``ceil(update / (4 tau_M))`` per Impala width."""
    import torch

    from rtcore.models import count_parameters
    from rtcore.models.export import measure_latency

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    measured = (1, 7) if quick else IMPALA_K
    rows: list[dict[str, Any]] = []
    for k in IMPALA_K:
        spec = f"impala:k={k}"
        params = count_parameters(spec, 1, 6)
        row: dict[str, Any] = {"k": k, "params": params, "device": dev, "source": "measured" if k in measured else "extrapolated"}
        if k in measured:
            big = params > 5e6 and dev == "cpu"
            lat = measure_latency(spec, device=dev, iters=10 if big else 50, warmup=2 if big else 5, threads=1)
            row["inference_p50"], row["inference_p99"] = lat["p50"], lat["p99"]
            row["update"] = time_update(spec, dev, iters=2 if big else 5)
        rows.append(row)
    known = [r for r in rows if r["source"] == "measured"]
    for key in ("inference_p50", "inference_p99", "update"):
        b, a = _line([r["params"] for r in known], [r[key] for r in known])
        for r in rows:
            if r["source"] == "extrapolated":
                r[key] = a + b * r["params"]
    for r in rows:
        r["inference_workers"] = math.ceil(r["inference_p99"] / TAU_M - 1e-9)
        r["learners"] = math.ceil(r["update"] / (UPDATE_EVERY * TAU_M) - 1e-9)
    os.makedirs(out, exist_ok=True)
    csv_path, fig_path = os.path.join(out, "scaling.csv"), os.path.join(out, "scaling.png")
    write_csv(csv_path, rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, color, label in (("inference_workers", "tab:blue", "inference workers N* = ceil(p99 / tau_M)"),
                              ("learners", "tab:green", f"learners ceil(update / ({UPDATE_EVERY} tau_M))")):
        ax.plot([r["params"] for r in rows], [r[key] for r in rows], "-", color=color, label=label)
        for r in rows:
            ax.plot(r["params"], r[key], "o", color=color, mfc=color if r["source"] == "measured" else "none")
    ax.plot([p[0] for p in PAPER_POKEMON], [p[1] for p in PAPER_POKEMON], "x", color="tab:blue", label="paper, Pokemon: inference")
    ax.plot([p[0] for p in PAPER_POKEMON], [p[2] for p in PAPER_POKEMON], "x", color="tab:green", label="paper, Pokemon: learners")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (Impala k = 1, 7, 29, 98)")
    ax.set_ylabel("processes")
    note = "filled: measured, hollow: extrapolated (linear in params)" if quick else "all measured"
    ax.set_title(f"Processes for 59.7 actions/s on {dev}\n{note}; x: the paper's GPU runs", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=80)
    plt.close(fig)
    return {"experiment": "scaling", "quick": quick, "figure": fig_path, "csv": csv_path, "device": dev,
            "measured_k": list(measured), "extrapolated_k": [k for k in IMPALA_K if k not in measured],
            "processes": {r["k"]: [r["inference_workers"], r["learners"]] for r in rows}}


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept (a single point: through the origin)."""
    if len(xs) == 1:
        return ys[0] / xs[0], 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


# --- CLI --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rtcore repro`` command line."""
    parser.add_argument("experiment", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--quick", action="store_true", help="the size that runs in minutes on a small machine")
    parser.add_argument("--out", default="repro-out", help="folder for the figure and the CSV (default: repro-out)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON line")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    parser.add_argument("--device", default=None, help="scaling, delay-learning: torch device (default: cuda if present)")
    parser.add_argument("--action-history", type=int, default=0,
                        help="delay-learning: feed every agent its last K actions beside the delayed observation "
                             "(the delay-aware observation; default 0: off)")


def main(args: argparse.Namespace) -> int:
    """Run one experiment; print its summary (``--json``: one JSON line)."""
    if not isinstance(args.seeds, int) or args.seeds < 1:
        raise SystemExit(f"rtcore repro: error: --seeds must be >= 1, got {args.seeds}")
    t0 = time.monotonic()
    if args.experiment == "inaction":
        res = inaction(args.quick, args.out, seeds=args.seeds)
    elif args.experiment == "scaling":
        res = scaling(args.quick, args.out, device=args.device)
    else:
        from rtcore.repro.learning import delay_learning

        if not 0 <= args.action_history <= 64:
            raise SystemExit(f"rtcore repro: error: --action-history must be in [0, 64], got {args.action_history}")
        res = delay_learning(args.quick, args.out, seeds=args.seeds, device=args.device,
                             action_history=args.action_history)
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["load_average_1min"] = round(os.getloadavg()[0], 1)  # wall-clock figures on a busy machine are noisy
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>40}: {v}")
    return 0
