"""Environment benchmark: emulator vs rtcore env vs the driver, for Atari and Game Boy.

For each env (Atari Pong through ale-py, and Game Boy on rtcore's own test cartridge through PyBoy):

* raw emulator steps/s (``ale.act`` / ``pyboy.tick``, no observation) vs steps/s through the rtcore env
  (``env.step``: emulator + screen fetch + grayscale/resize + reward), unpaced;
* the driver's own cost per tick (everything but the emulator: taking the action, the observation
  preprocessing, publishing to the ObsBoard, the replay add, the accounting), from an unpaced run of the
  driver loop; target <= 100 us per tick (0.6 % of a 60 Hz frame);
* tick lateness p50/p99/max and overruns when the driver process is paced at the native frame rate.

    python bench/envs.py [--quick] [--seconds S]

Prints a table and ends with one JSON line. Timings on a shared machine are noisy; rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

# One BLAS thread, as in a driver process (one env per process): the numpy peer must not oversubscribe.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import rtcore  # noqa: E402
from rtcore.envs.driver import EnvDriver  # noqa: E402

TARGET_COST_US = 100.0


def steps_per_s(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in), np.float32)
    s = n_in / n_out
    for o in range(n_out):
        lo, hi = o * s, (o + 1) * s
        for i in range(int(np.floor(lo)), int(np.ceil(hi))):
            m[o, i] = (min(hi, i + 1) - max(lo, i)) / s
    return m


def bench_preprocess(n: int) -> dict:
    """rtcore's C++ area resize vs the same area average as two float32 matmuls in numpy (the peer)."""
    from rtcore.envs.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (210, 160), dtype=np.uint8)
    out = np.empty((84, 84), np.uint8)
    prep = Preprocessor((210, 160))
    rows, cols = _area_matrix(210, 84), _area_matrix(160, 84).T.copy()
    f32 = np.empty((210, 160), np.float32)
    mid = np.empty((84, 160), np.float32)
    res = np.empty((84, 84), np.float32)

    def numpy_area():
        np.copyto(f32, img)
        np.matmul(rows, f32, out=mid)
        np.matmul(mid, cols, out=res)
        np.add(res, 0.5, out=res)
        np.copyto(out, res, casting="unsafe")

    numpy_area()
    ref = out.copy()
    prep(img, out)
    agree = float(np.abs(ref.astype(int) - out).max())
    t_rt = 1e6 / steps_per_s(lambda: prep(img, out), n)
    t_np = 1e6 / steps_per_s(numpy_area, n)
    return {"rtcore_resize_us": t_rt, "numpy_matmul_resize_us": t_np, "speedup_vs_numpy": t_np / t_rt,
            "max_abs_diff_levels": agree}


def bench_env(env_id: str, n: int, paced_seconds: float) -> dict:
    env = rtcore.make(env_id)
    env.reset(seed=0)
    raw = steps_per_s(lambda: env.emulator_step(env.default_action), n)
    env.reset(seed=0)

    def env_step():
        if env.step(env.default_action)[2]:
            env.reset()

    through = steps_per_s(env_step, n)
    env.close()

    shape = env.observation_space.shape
    obs_board = rtcore.ObsBoard(shape, dtype="uint8", frame_stack=4)
    action_board = rtcore.ActionBoard()
    replay = rtcore.ReplayBuffer(max(2 * n, 1000), shape, obs_dtype="uint8", frame_stack=4)
    env_fn = functools.partial(rtcore.make, env_id)
    try:
        drv = EnvDriver(env_fn, obs_board, action_board, replay=replay)
        t = time.perf_counter()
        inline = drv.run_inline(n, paced=False)
        driver_rate = n / (time.perf_counter() - t)
        drv.close()

        drv = EnvDriver(env_fn, obs_board, action_board, replay=replay)
        drv.start()
        deadline = time.monotonic() + 60
        while drv.stats.state != "running" and drv.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        first = drv.stats.steps
        time.sleep(paced_seconds)
        drv.stop()
        paced = drv.stats
        if drv.error:
            raise RuntimeError(f"driver failed: {drv.error}")
        drv.close()
    finally:
        replay.close()
        obs_board.close()
        action_board.close()
    return {
        "env": env_id,
        "raw_steps_per_s": raw,
        "env_steps_per_s": through,
        "env_vs_raw": through / raw,
        "driver_unpaced_steps_per_s": driver_rate,
        "driver_cost_mean_us": inline.cost_mean * 1e6,
        "driver_cost_p50_us": inline.cost_p50 * 1e6,
        "driver_cost_p99_us": inline.cost_p99 * 1e6,
        "emulator_mean_us": inline.emulator_mean * 1e6,
        "paced_hz": paced.frequency,
        "paced_steps": paced.steps - first,
        "lateness_p50_us": paced.lateness_p50 * 1e6,
        "lateness_p99_us": paced.lateness_p99 * 1e6,
        "lateness_max_us": paced.lateness_max * 1e6,
        "overruns": paced.overruns,
        "missed_ticks": paced.missed_ticks,
        "paced_cost_mean_us": paced.cost_mean * 1e6,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, 2 s paced (under 30 s in all)")
    p.add_argument("--steps", type=int, default=None, help="unpaced steps per measurement")
    p.add_argument("--seconds", type=float, default=None, help="seconds of paced driver per env")
    args = p.parse_args(argv)
    from _machine import describe, load

    machine_start = load()  # the load average goes with the figures
    n = args.steps or (1000 if args.quick else 5000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)

    pre = bench_preprocess(n)
    print(f"preprocess 210x160 -> 84x84: rtcore {pre['rtcore_resize_us']:.1f} us, numpy matmul "
          f"{pre['numpy_matmul_resize_us']:.1f} us ({pre['speedup_vs_numpy']:.1f}x; results differ by at most "
          f"{pre['max_abs_diff_levels']:.0f} grey level)")
    results = [bench_env(env_id, n, seconds) for env_id in ("ALE/Pong-v5", "gb/TestRom")]
    print(f"{'env':<14}{'raw/s':>10}{'env/s':>10}{'env/raw':>9}{'cost us':>9}{'p50 us':>9}{'p99 us':>9}{'emu us':>9}"
          f"{'late p99':>10}{'late max':>10}{'overrun':>9}")
    for r in results:
        print(f"{r['env']:<14}{r['raw_steps_per_s']:>10.0f}{r['env_steps_per_s']:>10.0f}{r['env_vs_raw']:>9.2f}"
              f"{r['driver_cost_mean_us']:>9.1f}{r['driver_cost_p50_us']:>9.1f}{r['driver_cost_p99_us']:>9.1f}"
              f"{r['emulator_mean_us']:>9.1f}"
              f"{r['lateness_p99_us']:>10.1f}{r['lateness_max_us']:>10.1f}{r['overruns']:>9d}")
    for r in results:
        verdict = "meets" if r["driver_cost_mean_us"] <= TARGET_COST_US else "misses"
        print(f"{r['env']}: driver cost {r['driver_cost_mean_us']:.1f} us/tick mean ({r['driver_cost_p50_us']:.1f} p50) = "
              f"{r['driver_cost_mean_us'] / TARGET_COST_US:.2f}x the {TARGET_COST_US:.0f} us target ({verdict}); "
              f"{100 * r['driver_cost_mean_us'] * 1e-6 * r['paced_hz']:.2f}% of a frame")
    out = {
        "bench": "envs",
        "quick": bool(args.quick),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "target_cost_us": TARGET_COST_US,
        "preprocess": pre,
        "results": results,
    }
    machine = {"machine_start": machine_start, "machine_end": load()}
    print(describe(machine["machine_start"], machine["machine_end"]))
    print(json.dumps({**out, **machine}, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
