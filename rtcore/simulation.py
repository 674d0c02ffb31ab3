"""Simulate staggered inference on a virtual clock: deterministic, and fast (C++ event loop).

An environment ticks every ``tau_m`` seconds and applies the newest unapplied action, else the default
action (inaction). ``workers`` inference workers with inference times drawn from ``tau_theta_dist`` act
under the same :class:`rtcore.StaggerSchedule` code the wall-clock workers run (``mode="max"``: the
paper's Algorithm 1, ``"mean"``: Algorithm 2), or free-running and unstaggered (``"none"``), or one
worker that infers and then learns for ``tau_l`` seconds in turn (``"sequential"``). Reports inaction,
the interval between published actions, the delay of applied actions in env steps, and the actions
wasted (published but superseded before the env took them).

    rtcore simulate --tau-m 0.016742 --tau-theta 0.1 --workers 6 --mode max --steps 100000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rtcore import _core
from rtcore._validate import OPTION_ERRORS, at_least, bad_option, in_range, ns, seconds
from rtcore.shared.sched import MEAN_SLOT_FLOOR, PUSHBACKS, TAU_WINDOW_MAX, n_star

__all__ = ["simulate", "SimulationResult", "add_arguments", "main", "SIM_MODES"]

SIM_MODES = ("max", "mean", "none", "sequential")
_DISTS = ("constant", "normal", "lognormal", "samples")
GAMEBOY_TAU_M = 1 / 59.7275


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation measured. Times in seconds, delays in env steps.

    Attributes:
        inaction_fraction: env steps that applied the default action / steps.
        late_inaction_fraction: the same over the second half of the steps (the steady state, after
            warm-up and after an early ``outlier``).
        action_interval_mean, action_interval_std, action_interval_p99: seconds between consecutive
            published actions (the schedule's target is ``target_interval``).
        delay_mean, delay_p99: env steps between the frame an applied action was computed from and
            the tick that applied it.
        wasted_actions: actions published but superseded by a newer one before the env took them.
        n_star: ``ceil(tau_theta / tau_m)`` (for the distribution's mean ``tau_theta``).
        tau_max_final, mean_tau_final: the schedule's running max and window mean at the end (0 for
            ``none`` / ``sequential``).
        target_interval: the schedule's target interval ``tau / N`` at the end (0 without a schedule).
        steps, workers, mode, tau_m, tau_theta, tau_l, seed, tau_window, outlier, pushback,
            min_interval: the inputs.
        posted, applied, inaction_steps, pushbacks, restaggers: counts.
        applied_gap_mean: env steps between consecutive applied actions (1.0: one every step).
        action_interval_cv: ``action_interval_std / action_interval_mean``.
    """

    inaction_fraction: float
    action_interval_mean: float
    action_interval_std: float
    action_interval_p99: float
    action_interval_cv: float
    delay_mean: float
    delay_p99: float
    wasted_actions: int
    n_star: int
    tau_max_final: float
    mean_tau_final: float
    target_interval: float
    steps: int
    workers: int
    mode: str
    tau_m: float
    tau_theta: float
    tau_theta_dist: str
    tau_l: float
    seed: int
    posted: int
    applied: int
    inaction_steps: int
    applied_gap_mean: float
    pushbacks: int
    restaggers: int
    late_inaction_fraction: float = 0.0
    tau_window: int = 0
    outlier: tuple[int, float] | None = None
    pushback: str = "lattice"
    min_interval: float = 0.0
    stalls: int = 0  # passes the schedule took as stalls, not inference times (tau_window > 0)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON)."""
        return asdict(self)


def load_samples(path: str | os.PathLike[str]) -> np.ndarray:
    """Inference times (seconds) from a ``.npy`` file or a text file of numbers (whitespace/comma separated)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"inference-time samples file {p!r} does not exist")
    if p.endswith(".npy"):
        arr = np.load(p, allow_pickle=False)
    else:
        with open(p, encoding="utf-8") as f:
            text = f.read().replace(",", " ")
        try:
            arr = np.array([float(x) for x in text.split()], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{p!r} is not a text file of numbers (inference times in seconds): {e}") from None
    arr = np.asarray(arr, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{p!r} holds no inference times")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{p!r}: inference times must be finite and > 0 seconds")
    return arr


def _parse_dist(spec: str) -> tuple[int, float, list[int], str]:
    if not isinstance(spec, str):
        raise TypeError(f"tau_theta_dist must be a string, got {type(spec).__name__}")
    kind, _, arg = spec.partition(":")
    if kind not in _DISTS:
        raise ValueError(
            f"tau_theta_dist {spec!r} is not one of 'constant', 'normal:STD', 'lognormal:SIGMA', 'samples:FILE'"
        )
    if kind == "constant":
        if arg:
            raise ValueError(f"tau_theta_dist 'constant' takes no parameter, got {spec!r}")
        return 0, 0.0, [], spec
    if kind == "samples":
        if not arg:
            raise ValueError("tau_theta_dist 'samples:FILE' needs a file name")
        arr = load_samples(arg)
        return 3, 0.0, [max(1, ns(x)) for x in arr], spec
    try:
        v = float(arg)
    except ValueError:
        raise ValueError(f"tau_theta_dist {spec!r}: expected '{kind}:<number>'") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"tau_theta_dist {spec!r}: the parameter must be finite and >= 0")
    return _DISTS.index(kind), v, [], spec


def simulate(
    tau_m: float,
    tau_theta: float,
    workers: int,
    mode: str = "max",
    steps: int = 10000,
    seed: int = 0,
    tau_theta_dist: str = "constant",
    tau_l: float = 0.0,
    window: int = 32,
    tau_max_seed: float | None = None,
    pushback: str = "lattice",
    tau_window: int = 0,
    outlier: tuple[int, float] | None = None,
    min_interval: float | None = None,
) -> SimulationResult:
    """Simulate ``steps`` env steps of period ``tau_m`` with ``workers`` inference workers.

    Args:
        tau_m: env period (s), e.g. ``1 / 59.7275`` for a Game Boy.
        tau_theta: inference time (s); the mean for the random distributions.
        workers: inference workers (1 for ``"sequential"``).
        mode: ``"max"`` | ``"mean"`` | ``"none"`` | ``"sequential"``.
        steps: env steps to simulate.
        seed: random seed (the result is a function of the arguments and the seed).
        tau_theta_dist: ``"constant"`` | ``"normal:STD"`` (std in seconds, truncated at 1 us) |
            ``"lognormal:SIGMA"`` (log-space sigma, mean ``tau_theta``) | ``"samples:FILE"`` (inference
            times in seconds from a text or ``.npy`` file, drawn uniformly with replacement;
            ``tau_theta`` then only seeds the schedule and ``n_star``).
        tau_l: learning time per action (s), ``"sequential"`` only.
        window: the mean estimator's window (``"mean"``).
        tau_max_seed: the schedule's ``tau_max`` seed (default ``tau_theta``).
        pushback: ``"paper"`` | ``"lattice"`` | ``"authors"`` (``"max"`` mode; see
            :class:`rtcore.StaggerSchedule`). With ``"authors"`` a worker also reads its frame before
            sleeping its push-back, as the authors' loop does.
        min_interval: the schedule's ``min_interval`` (``"mean"`` mode's publish-slot floor); default
            ``MEAN_SLOT_FLOOR * tau_m``, as the runner, 0 for none.
        tau_window: the schedule's ``tau_max`` forgetting window in reports (0: the paper's all-time
            maximum; see :class:`rtcore.StaggerSchedule`).
        outlier: ``(k, seconds)``: the k-th inference started (0-based, all workers together) takes
            ``seconds`` instead of its draw (a deterministic stall: GC pause, descheduled worker); the
            random stream is drawn as without it.
    """
    if pushback not in PUSHBACKS:
        raise ValueError(f"pushback must be one of {PUSHBACKS}, got {pushback!r}")
    tm = seconds("tau_m", tau_m, positive=True)
    tt = seconds("tau_theta", tau_theta, positive=True)
    tl = seconds("tau_l", tau_l, positive=False)
    n = at_least("workers", workers, 1)
    if mode not in SIM_MODES:
        raise ValueError(f"mode must be one of {SIM_MODES}, got {mode!r}")
    if mode == "sequential" and n != 1:
        raise ValueError(f"mode 'sequential' has exactly one worker (it infers, then learns), got workers={n}")
    if tl > 0 and mode != "sequential":
        raise ValueError(f"tau_l applies to mode 'sequential' only (learners run apart in the others), got mode={mode!r}")
    k = at_least("steps", steps, 1)
    sd = at_least("seed", seed, 0)
    win = at_least("window", window, 1)
    tw = in_range("tau_window", tau_window, 0, TAU_WINDOW_MAX)
    out_at, out_ns, out = -1, 0, None
    if outlier is not None:
        if not isinstance(outlier, tuple) or len(outlier) != 2:
            raise TypeError(f"outlier must be a (k, seconds) tuple, got {outlier!r}")
        out_at = at_least("outlier index", outlier[0], 0)
        out_s = seconds("outlier time", outlier[1], positive=True)
        out_ns, out = max(1, ns(out_s)), (out_at, out_s)
    seed_tau = tt if tau_max_seed is None else seconds("tau_max_seed", tau_max_seed, positive=True)
    mi = MEAN_SLOT_FLOOR * tm if min_interval is None else seconds("min_interval", min_interval, positive=False)
    dist, param, samples, spec = _parse_dist(tau_theta_dist)
    d = _core.simulate(
        max(1, ns(tm)), max(1, ns(tt)), n, SIM_MODES.index(mode), k, sd, dist, param, samples, ns(tl), win,
        max(1, ns(seed_tau)), PUSHBACKS.index(pushback), tw, out_at, out_ns, ns(mi),
    )
    ai = d["action_interval"]
    return SimulationResult(
        inaction_fraction=d["inaction_fraction"],
        action_interval_mean=ai["mean"],
        action_interval_std=ai["std"],
        action_interval_p99=ai["p99"],
        action_interval_cv=ai["std"] / ai["mean"] if ai["mean"] > 0 else 0.0,
        delay_mean=d["delay"]["mean"],
        delay_p99=d["delay"]["p99"],
        wasted_actions=d["wasted"],
        n_star=int(_core.n_star(tt, tm)),
        tau_max_final=d["tau_max_final"],
        mean_tau_final=d["mean_tau_final"],
        target_interval=d["target_interval"],
        steps=k,
        workers=n,
        mode=mode,
        tau_m=tm,
        tau_theta=tt,
        tau_theta_dist=spec,
        tau_l=tl,
        seed=sd,
        posted=d["posted"],
        applied=d["applied"],
        inaction_steps=d["inaction_steps"],
        applied_gap_mean=d["applied_gap"]["mean"],
        pushbacks=d["pushbacks"],
        restaggers=d["restaggers"],
        stalls=d["stalls"],
        late_inaction_fraction=d["late_inaction_fraction"],
        tau_window=tw,
        outlier=out,
        pushback=pushback,
        min_interval=mi,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rtcore simulate`` command line."""
    parser.add_argument("--tau-m", type=float, default=GAMEBOY_TAU_M, help="env period in seconds (default: Game Boy, 1/59.7275)")
    parser.add_argument("--tau-theta", type=float, required=True, help="inference time in seconds (mean of the distribution)")
    parser.add_argument(
        "--tau-theta-dist",
        default="constant",
        help="constant | normal:STD | lognormal:SIGMA | samples:FILE (default: constant)",
    )
    parser.add_argument("--workers", type=int, default=None, help="inference workers (default: N* = ceil(tau_theta / tau_m); 1 for sequential)")
    parser.add_argument("--mode", choices=SIM_MODES, default="max", help="staggering mode (default: max)")
    parser.add_argument("--tau-l", type=float, default=0.0, help="learning time per action in seconds (sequential mode)")
    parser.add_argument("--steps", type=int, default=10000, help="env steps to simulate (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--window", type=int, default=32, help="mean estimator window (mode mean; default: 32)")
    parser.add_argument("--pushback", choices=PUSHBACKS, default="lattice",
                        help="max mode: how a new maximum moves the others (default: lattice; authors: the authors' code)")
    parser.add_argument(
        "--tau-window", type=int, default=0,
        help=f"forget inference times older than this many reports in tau_max (0: all-time max, the paper; at most {TAU_WINDOW_MAX})",
    )
    parser.add_argument(
        "--min-interval", type=float, default=None,
        help="mean mode: publish slots at least this many seconds apart (default: 0.85 tau_m, as rtcore run; 0: mean / N only)",
    )
    parser.add_argument("--outlier", default=None, metavar="K:SECONDS", help="the K-th inference (0-based) takes SECONDS (a stall)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")


def main(args: argparse.Namespace) -> int:
    """``rtcore simulate``: run :func:`simulate` and print the result (``--json``: one JSON line)."""
    try:
        workers = args.workers
        if workers is None:
            tau_theta = seconds("tau_theta", args.tau_theta, positive=True)
            workers = 1 if args.mode == "sequential" else n_star(tau_theta, seconds("tau_m", args.tau_m, positive=True))
        outlier = None
        if args.outlier is not None:
            k_s, sep, sec_s = args.outlier.partition(":")
            try:
                outlier = (int(k_s), float(sec_s))
            except ValueError:
                raise ValueError(f"--outlier expects K:SECONDS (an int and a number), got {args.outlier!r}") from None
            if not sep:
                raise ValueError(f"--outlier expects K:SECONDS, got {args.outlier!r}")
        r = simulate(
            args.tau_m, args.tau_theta, workers, mode=args.mode, steps=args.steps, seed=args.seed,
            tau_theta_dist=args.tau_theta_dist, tau_l=args.tau_l, window=args.window, pushback=args.pushback,
            tau_window=args.tau_window, outlier=outlier, min_interval=args.min_interval,
        )
    except OPTION_ERRORS as e:  # simulate() checks every argument before it runs anything
        return bad_option("rtcore simulate", e)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    print(
        f"{r.mode} staggering, {r.workers} worker(s), tau_theta {r.tau_theta * 1e3:.3f} ms ({r.tau_theta_dist}), "
        f"tau_M {r.tau_m * 1e3:.3f} ms, N* = {r.n_star}, {r.steps} steps, seed {r.seed}"
    )
    print(
        f"  inaction        {r.inaction_fraction * 100:8.3f} %  ({r.inaction_steps} default actions), "
        f"{r.late_inaction_fraction * 100:.3f} % in the second half"
    )
    print(
        f"  action interval {r.action_interval_mean * 1e3:8.3f} ms mean, {r.action_interval_std * 1e3:.3f} std "
        f"(CV {r.action_interval_cv * 100:.2f} %), {r.action_interval_p99 * 1e3:.3f} p99"
    )
    print(f"  delay           {r.delay_mean:8.3f} steps mean, {r.delay_p99:.0f} p99")
    print(f"  actions         {r.posted} posted, {r.applied} applied, {r.wasted_actions} wasted")
    if r.mode in ("max", "mean"):
        print(
            f"  schedule        tau_max {r.tau_max_final * 1e3:.3f} ms, mean {r.mean_tau_final * 1e3:.3f} ms, "
            f"target interval {r.target_interval * 1e3:.3f} ms, {r.pushbacks} push-backs, "
            f"{r.stalls} stall(s), tau_window {r.tau_window or 'all-time'}"
        )
    return 0
