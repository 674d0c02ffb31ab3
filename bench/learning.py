"""Realtime learning curves on MinAtar: return against wall-clock time and env steps.

Every run is a real ``rtcore run`` (env driver on the wall clock, inference workers, learners) of the
``minatar`` network on ``minatar/<Game>`` at a fixed ``--frequency``, with the model's latency
emulated by ``--inference-delay`` (so a small network stands in for one that takes that long):

* staggered vs sequential (the peer): the same game, model, latency and learning settings; N
  staggered workers act on every step, the sequential agent acts once per forward pass (and learns in
  between), so the env applies its default action in the gaps;
* ``--learn-on acted`` vs ``applied`` (the peer) at a delay of ``--delay-steps`` env steps
  (inference delay = delay-steps * tau_M; staggered), and ``acted`` with ``--action-history K`` (the
  delay-aware observation: the last K applied actions and the pending post as an input; K =
  ``--action-history``, default the delay in steps; 0 leaves this variant out).

Each configuration runs ``--seeds`` seeds (default 3); the figure shows the median curve over seeds
(shaded: min..max), the table and the JSON give the median final return (mean of the last <= 100
episodes). Learning settings are RunConfig's defaults except where an option here says otherwise.
Runs are sequential, one at a time, each with ``--realtime`` (SCHED_FIFO for the env and the workers
where the OS allows it), so no run competes with another.

    python bench/learning.py --quick --lr 1e-3           # 24 runs of 60 s: about an hour on a loaded 2-core machine
    python bench/learning.py --seconds 300 --out docs/figures/learning.png
    python bench/learning.py --quick --games '' --delay-games Catch --seconds 30 --delay-steps 4   # history vs learn-on

Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

GAMES = ("Breakout", "Freeway", "SpaceInvaders")

# Catch (rtcore/Catch, 400 Hz) learns within a minute, so its curves show learning where MinAtar's first
# minutes do not; its settings are the default suite's (tests/test_learning.py).
CATCH = dict(env="rtcore/Catch", model="mlp:hidden=64", frame_stack=1, frequency=400.0, batch_size=128, lr=3e-3,
             n_step=5, gamma=0.9, target_update=50, epsilon_end=0.02, epsilon_decay_steps=3_000,
             learning_starts=500, updates_per_step=0.25)


def game_settings(game: str, args: argparse.Namespace) -> dict:
    if game == "Catch":
        return dict(CATCH)
    return dict(env=f"minatar/{game}", model=args.model, frame_stack=args.frame_stack, frequency=args.frequency,
                lr=args.lr, learning_starts=args.learning_starts)


def freq(game: str, args: argparse.Namespace) -> float:
    return CATCH["frequency"] if game == "Catch" else args.frequency


def variant_name(learn_on: str, action_history: int) -> str:
    """The delay comparison's variants: ``acted``, ``applied``, ``acted+h4`` (with an action history of 4)."""
    return f"{learn_on}+h{action_history}" if action_history else learn_on


def one_run(game: str, mode: str, seed: int, args: argparse.Namespace, inference_delay: float, learn_on: str,
            root: Path, kind: str, action_history: int = 0) -> dict:
    import rtcore
    from rtcore.agent.metrics import read_metrics

    run_dir = root / f"{game}-{mode}-{variant_name(learn_on, action_history)}-{inference_delay:g}-s{seed}"
    settings = game_settings(game, args)
    cfg = rtcore.RunConfig(**settings, seconds=args.seconds, seed=seed, mode=mode,
                           inference_delay=inference_delay, learn_on=learn_on, action_history=action_history,
                           # N* + 1 (one spare for a slow pass), fixed: "auto" sizes N from a latency
                           # measured on a loaded machine and varies between runs
                           workers=str(math.ceil(inference_delay * settings["frequency"] - 1e-9) + 1)
                           if mode == "staggered" else "1",
                           # the learner at normal priority: the sequential agent learns in its own
                           # (realtime) process, so a niced learner would be the only one starved
                           learner_nice=0, realtime=True, quiet=True, plots=False, tensorboard=False, run_dir=str(run_dir),
                           checkpoint_interval=0.0, latency_iters=20)
    t0 = time.monotonic()
    s = rtcore.run(cfg)
    m = read_metrics(run_dir)
    keep = ("time_s", "env_steps", "mean_return", "episodes", "learner_updates", "inaction_fraction")
    return {"game": game, "kind": kind, "mode": mode, "learn_on": learn_on, "action_history": action_history,
            "variant": variant_name(learn_on, action_history), "seed": seed,
            "inference_delay": inference_delay, "frequency": settings["frequency"],
            "final_return": s.mean_return, "episodes": s.episodes, "env_steps": s.env_steps,
            "updates": s.learner_updates, "inaction": s.inaction_fraction, "delay_mean": s.delay_mean,
            "workers": s.workers, "wall_s": time.monotonic() - t0,
            "curve": {k: [float(v) for v in m[k]] for k in keep if k in m}}


def median(values: list[float]) -> float:
    v = [x for x in values if x == x]
    return statistics.median(v) if v else math.nan


def band(runs: list[dict], x_key: str, grid) -> tuple:
    """Median, min and max of mean_return over runs, interpolated on ``grid`` of ``x_key``."""
    import numpy as np

    ys = []
    for r in runs:
        x = np.asarray(r["curve"].get(x_key, []), float)
        y = np.asarray(r["curve"].get("mean_return", []), float)
        ok = ~np.isnan(y)
        if ok.sum() < 2:
            continue
        ys.append(np.interp(grid, x[ok], y[ok], left=np.nan, right=y[ok][-1]))
    if not ys:
        nan = np.full_like(grid, np.nan)
        return nan, nan, nan
    a = np.vstack(ys)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def draw(results: list[dict], games: list[str], delay_games: list[str], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = len(games) + len(delay_games)
    fig, axes = plt.subplots(2, cols, figsize=(3.8 * cols, 6.6), squeeze=False)
    panels = [(g, "mode", ("staggered", "sequential"), "main") for g in games]
    hist = variant_name("acted", args.action_history)
    delay_variants = ("acted", "applied") + ((hist,) if args.action_history else ())
    panels += [(g, "variant", delay_variants, "delay") for g in delay_games]
    colors = {"staggered": "tab:blue", "sequential": "tab:red", "acted": "tab:green", "applied": "tab:purple",
              hist: "tab:orange"}
    for c, (game, key, variants, kind) in enumerate(panels):
        for row, (x_key, label) in enumerate((("time_s", "wall-clock seconds"), ("env_steps", "env steps"))):
            ax = axes[row][c]
            for v in variants:
                runs = [r for r in results if r["game"] == game and r[key] == v and r["kind"] == kind]
                if not runs:
                    continue
                top = max(max(r["curve"].get(x_key, [0]) or [0]) for r in runs)
                grid = np.linspace(0, top, 200)
                med, lo, hi = band(runs, x_key, grid)
                name = v if key == "mode" else f"learn-on {v.replace('+h', ' + history ')}"
                ax.plot(grid, med, color=colors[v], label=f"{name} (median of {len(runs)})")
                ax.fill_between(grid, lo, hi, color=colors[v], alpha=0.15)
            ax.set_xlabel(label)
            if c == 0:
                ax.set_ylabel("mean return (last <= 100 episodes)")
            f = freq(game, args)
            title = (f"{game}: {f:g} Hz, tau_theta {1e3 * args.inference_steps / f:.1f} ms" if key == "mode"
                     else f"{game}: delay {args.delay_steps} steps (staggered)")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
    title = ("rtcore: realtime DQN, return while learning in real time (median of seeds; band: min..max)" if cols >= 3
             else "rtcore: realtime DQN\n(median of seeds; band: min..max)")  # one or two panels: a short title
    fig.suptitle(title, fontsize=11 if cols >= 3 else 9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (60 s each) and the delay comparison on one game")
    p.add_argument("--games", default=",".join(GAMES), help="MinAtar games, comma-separated")
    p.add_argument("--delay-games", default=None, help="games of the --learn-on comparison (default: all; --quick: Breakout)")
    p.add_argument("--seconds", type=float, default=None, help="wall-clock seconds per run (default 300; --quick 45)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--frequency", type=float, default=100.0, help="MinAtar env steps per second (fixed; Catch: 400)")
    p.add_argument("--inference-steps", type=float, default=3.0,
                   help="emulated model latency in env steps (staggered vs sequential): 30 ms at 100 Hz")
    p.add_argument("--delay-steps", type=int, default=8, help="delay of the --learn-on comparison, in env steps")
    p.add_argument("--learn-on", default="acted", help="--learn-on of the staggered vs sequential runs")
    p.add_argument("--action-history", type=int, default=None,
                   help="K of the delay comparison's third variant, --learn-on acted --action-history K "
                        "(default: --delay-steps; 0: leave it out)")
    p.add_argument("--model", default="minatar")
    p.add_argument("--frame-stack", type=int, default=1, help="MinAtar's state already shows motion (trail channels)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: RunConfig's)")
    p.add_argument("--learning-starts", type=int, default=None, help="(default: RunConfig's)")
    p.add_argument("--out", default="docs/figures/learning.png", help="the figure (PNG)")
    p.add_argument("--json-out", default=None, help="also write every run's curve to this JSON file")
    p.add_argument("--merge", action="append", default=[],
                   help="add the runs of an earlier --json-out file to the table and the figure (repeatable; "
                        "with --games '' --delay-games '' nothing new runs)")
    args = p.parse_args()
    if args.seconds is None:
        args.seconds = 60.0 if args.quick else 300.0
    if args.action_history is None:
        args.action_history = args.delay_steps
    import rtcore

    if args.lr is None:
        args.lr = rtcore.RunConfig().lr
    if args.learning_starts is None:
        args.learning_starts = rtcore.RunConfig().learning_starts
    games = [g for g in args.games.split(",") if g]
    delay_games = (args.delay_games.split(",") if args.delay_games is not None
                   else (["Breakout"] if args.quick else games))
    delay_games = [g for g in delay_games if g]
    root = Path(tempfile.mkdtemp(prefix="rtcore-learning-"))
    plan = [(g, m, s, args.inference_steps / freq(g, args), args.learn_on, "main", 0) for g in games
            for s in range(args.seeds) for m in ("staggered", "sequential")]
    delay_variants = [("acted", 0), ("applied", 0)] + ([("acted", args.action_history)] if args.action_history else [])
    plan += [(g, "staggered", s, args.delay_steps / freq(g, args), lo, "delay", k) for g in delay_games
             for s in range(args.seeds) for lo, k in delay_variants]
    print(f"bench/learning.py: {len(plan)} runs of {args.seconds:g} s (run dirs under {root})", file=sys.stderr)
    results = []
    for path in args.merge:
        for r in json.loads(Path(path).read_text()):
            if "kind" not in r:  # files of the first version: the delay runs are the learn-on ones at delay_steps
                f = r.get("frequency", args.frequency)
                r["kind"] = "delay" if abs(r["inference_delay"] - args.delay_steps / f) < 1e-9 else "main"
            r.setdefault("action_history", 0)  # files from before the action history
            r.setdefault("variant", variant_name(r["learn_on"], r["action_history"]))
            results.append(r)
            for names in (games, delay_games):
                if r["game"] not in names and ((r["kind"] == "main") == (names is games)):
                    names.append(r["game"])
    for i, (g, m, s, d, lo, kind, k) in enumerate(plan):
        r = one_run(g, m, s, args, d, lo, root, kind, k)
        results.append(r)
        print(f"[{i + 1}/{len(plan)}] {g:14s} {m:10s} learn-on {variant_name(lo, k):10s} delay {1e3 * d:5.0f} ms seed {s}: "
              f"final return {r['final_return']:7.2f}  episodes {r['episodes']:4d}  steps {r['env_steps']:6d}  "
              f"updates {r['updates']:6d}  inaction {r['inaction']:.3f}  delay {r['delay_mean']:.1f} steps  "
              f"N {r['workers']}", file=sys.stderr, flush=True)
    summary: dict = {"bench": "learning", "frequency": args.frequency, "seconds": args.seconds, "seeds": args.seeds,
                     "inference_steps": args.inference_steps, "delay_steps": args.delay_steps, "model": args.model,
                     "frame_stack": args.frame_stack, "lr": args.lr, "learning_starts": args.learning_starts, "quick": args.quick,
                     "action_history": args.action_history, "games": {}}
    hist = variant_name("acted", args.action_history)
    print(f"\n{'game':14s} {'staggered':>10s} {'sequential':>10s} {'ratio':>7s} {'acted':>8s} {'applied':>8s} "
          f"{hist:>9s} {'inaction st/seq':>16s}  (median final return over {args.seeds} seeds)")
    for g in sorted(set(games) | set(delay_games)):
        def med(key, value, kind, field="final_return"):
            return median([r[field] for r in results if r["game"] == g and r[key] == value and r["kind"] == kind])

        st = med("mode", "staggered", "main")
        sq = med("mode", "sequential", "main")
        ac = med("variant", "acted", "delay")
        ap = med("variant", "applied", "delay")
        ah = med("variant", hist, "delay") if args.action_history else math.nan
        ratio = st / sq if sq and sq == sq and sq > 0 else math.nan
        summary["games"][g] = {"staggered": st, "sequential": sq, "staggered_over_sequential": ratio,
                               "acted_delay": ac, "applied_delay": ap,
                               "acted_over_applied": ac / ap if ap and ap == ap and ap > 0 else math.nan,
                               "acted_history_delay": ah,
                               "inaction_staggered": med("mode", "staggered", "main", "inaction"),
                               "inaction_sequential": med("mode", "sequential", "main", "inaction"),
                               "updates_staggered": med("mode", "staggered", "main", "updates"),
                               "updates_sequential": med("mode", "sequential", "main", "updates"),
                               "delay_steps_measured": med("variant", "acted", "delay", "delay_mean")}
        print(f"{g:14s} {st:10.2f} {sq:10.2f} {ratio:7.2f} {ac:8.2f} {ap:8.2f} {ah:9.2f} "
              f"{summary['games'][g]['inaction_staggered']:7.3f}/{summary['games'][g]['inaction_sequential']:.3f}")
    out = Path(args.out)
    draw(results, games, delay_games, args, out)
    summary["figure"] = str(out)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
