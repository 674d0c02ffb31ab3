"""Timer lateness: rtcore.Timer (sleep then spin) vs plain clock_nanosleep vs Python time.sleep.

Each method runs a loop on absolute deadlines ``start + k * period`` and records, for every tick, how
late it returned (``CLOCK_MONOTONIC`` read in Python right after the wait, minus the deadline; the same
measurement for every method). Methods:

* ``rtcore``       rtcore.Timer(period, spin=200 us): clock_nanosleep(TIMER_ABSTIME) then spin.
* ``nanosleep``    rtcore.Timer(period, spin=0): clock_nanosleep(TIMER_ABSTIME) only.
* ``time.sleep``   ``time.sleep(deadline - time.monotonic())`` each tick (the usual Python loop).

at 60 Hz and 1 kHz, idle and with busy-looping subprocesses loading the other cores. Prints a table,
the ratio time.sleep / rtcore of p99 lateness at 60 Hz idle (target: rtcore p99 <= 20 us and >= 5x
better), and one JSON line.

    python bench/timer.py [--quick] [--seconds-60hz S] [--seconds-1khz S] [--load-procs N] [--realtime]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np

import rtcore
from rtcore.shared.timer import monotonic_ns

SPIN = 200e-6


def _busy(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def _run_rtcore(period: float, n: int, spin: float) -> tuple[np.ndarray, dict]:
    lat = np.empty(n, np.int64)
    t = rtcore.Timer(period, spin=spin, start=rtcore.shared.timer.monotonic() + period)
    for i in range(n):
        k = t.wait()
        lat[i] = monotonic_ns() - (t._t.start_ns + k * t._t.period_ns)
    return lat, {"overruns": t.stats()["overruns"], "timer_p99_us": t.stats()["lateness_p99"] * 1e6}


def _run_time_sleep(period: float, n: int) -> tuple[np.ndarray, dict]:
    lat = np.empty(n, np.int64)
    period_ns = int(round(period * 1e9))
    start = time.monotonic_ns() + period_ns
    k = 0
    overruns = 0
    for i in range(n):
        deadline = start + k * period_ns
        delay = (deadline - time.monotonic_ns()) * 1e-9
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic_ns()
        lat[i] = now - deadline
        # Same policy as rtcore.Timer: skip ticks whose successor is already due.
        nxt = k + 1
        if now >= start + (nxt + 1) * period_ns:
            newest = (now - start) // period_ns
            overruns += newest - nxt + 1
            nxt = newest + 1
        k = nxt
    return lat, {"overruns": overruns}


def _summary(lat_ns: np.ndarray) -> dict:
    us = lat_ns.astype(np.float64) * 1e-3
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
        "early": int((lat_ns < 0).sum()),
        "n": int(lat_ns.size),
    }


def measure(period: float, n: int) -> dict[str, dict]:
    out = {}
    for method in ("rtcore", "nanosleep", "time.sleep"):
        if method == "rtcore":
            lat, extra = _run_rtcore(period, n, SPIN)
        elif method == "nanosleep":
            lat, extra = _run_rtcore(period, n, 0.0)
        else:
            lat, extra = _run_time_sleep(period, n)
        out[method] = {**_summary(lat), **extra}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (numbers are rougher)")
    ap.add_argument("--seconds-60hz", type=float, default=None, help="seconds per method at 60 Hz (default 10, quick 2)")
    ap.add_argument("--seconds-1khz", type=float, default=None, help="seconds per method at 1 kHz (default 3, quick 1)")
    ap.add_argument("--load-procs", type=int, default=None, help="busy subprocesses in the loaded runs (default: cores - 1, at least 1)")
    ap.add_argument("--realtime", action="store_true", help="run the loops with SCHED_FIFO + timerslack 1 ns (if allowed)")
    args = ap.parse_args(argv)

    s60 = args.seconds_60hz if args.seconds_60hz is not None else (2.0 if args.quick else 10.0)
    s1k = args.seconds_1khz if args.seconds_1khz is not None else (1.0 if args.quick else 3.0)
    load_procs = args.load_procs if args.load_procs is not None else max(1, (os.cpu_count() or 2) - 1)
    rates = {"60Hz": (1 / 60.0, max(10, int(s60 * 60))), "1kHz": (1e-3, max(10, int(s1k * 1000)))}

    results: dict = {}
    rt_status = "off"

    def run_all() -> None:
        nonlocal rt_status
        if args.realtime:
            rt_status = rtcore.Timer(1.0, realtime=True).realtime_status
        for cond in ("idle", "loaded"):
            procs: list[mp.Process] = []
            stop = mp.get_context("spawn").Event()
            if cond == "loaded":
                ctx = mp.get_context("spawn")
                procs = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(load_procs)]
                for p in procs:
                    p.start()
                time.sleep(0.3)
            try:
                for rate, (period, n) in rates.items():
                    results[f"{rate}_{cond}"] = measure(period, n)
            finally:
                stop.set()
                for p in procs:
                    p.join(timeout=5)
                    if p.is_alive():
                        p.kill()
                        p.join()

    # The loops run in a thread of their own so --realtime never changes the main thread.
    th = threading.Thread(target=run_all)
    th.start()
    th.join()

    load1 = os.getloadavg()[0]
    print(
        f"# timer lateness (us): {platform.node()} {os.cpu_count()} cores, load average {load1:.2f} "
        f"(a busy machine makes every tail a scheduling delay), realtime={rt_status}, load_procs={load_procs}"
    )
    print(f"{'case':<14}{'method':<12}{'p50':>9}{'p99':>9}{'max':>10}{'mean':>9}{'overruns':>10}{'early':>7}{'n':>7}{'C++ p99':>9}")
    for case, by_method in results.items():
        for method, r in by_method.items():
            print(
                f"{case:<14}{method:<12}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['max_us']:>10.1f}{r['mean_us']:>9.1f}"
                f"{r['overruns']:>10}{r['early']:>7}{r['n']:>7}"
                + (f"{r['timer_p99_us']:>9.1f}" if "timer_p99_us" in r else f"{'-':>9}")
            )
    print("(lateness read in Python after each wait returns; 'C++ p99': the Timer's own figure, taken at the deadline inside Timer.wait)")
    idle = results["60Hz_idle"]
    ratio = idle["time.sleep"]["p99_us"] / max(idle["rtcore"]["p99_us"], 1e-3)
    ratio_ns = idle["nanosleep"]["p99_us"] / max(idle["rtcore"]["p99_us"], 1e-3)
    print(
        f"60 Hz idle p99: rtcore {idle['rtcore']['p99_us']:.1f} us as seen from Python "
        f"({idle['rtcore']['timer_p99_us']:.1f} us inside the timer), time.sleep {idle['time.sleep']['p99_us']:.1f} us "
        f"({ratio:.1f}x), clock_nanosleep {idle['nanosleep']['p99_us']:.1f} us ({ratio_ns:.1f}x); "
        f"target p99 <= 20 us and >= 5x: {'met' if idle['rtcore']['p99_us'] <= 20 and ratio >= 5 else 'NOT met'}"
    )
    figures = {
        "bench": "timer",
        "quick": args.quick,
        "cores": os.cpu_count(),
        "load_procs": load_procs,
        "loadavg_1min": load1,
        "realtime": rt_status,
        "spin_us": SPIN * 1e6,
        "ratio_p99_time_sleep_over_rtcore_60hz_idle": ratio,
        "ratio_p99_nanosleep_over_rtcore_60hz_idle": ratio_ns,
        "results": results,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
