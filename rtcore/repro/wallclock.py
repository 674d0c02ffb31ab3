"""Staggering on the wall clock with emulated inference latency, for ``rtcore repro inaction`` and tests.

An env ticks on an :class:`rtcore.Timer` every ``tau_m`` seconds in the calling process and takes the
newest fresh action (else it idles: inaction). A pool of spawned worker processes runs the worker loop
of :mod:`rtcore.sched` (``StaggerSchedule`` + ``ObsBoard`` + ``ActionBoard``) with an emulated
inference: a precise sleep of a time drawn from ``N(tau_theta, (jitter * tau_theta)^2)`` (seeded per
worker, truncated at 0.1 ms). ``mode="none"`` is the peer: the same workers free-running, unstaggered
(each reads, infers and posts as fast as it can). The pool is spawned once and reused across settings
(``rtcore repro inaction``, ``bench/stagger.py``).

    with WallclockPool(12) as pool:
        r = pool.run(tau_theta=8 / 59.7275, n=8, mode="mean", ticks=600, jitter=0.1)
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np

from rtcore.shared.boards import ActionBoard, ObsBoard
from rtcore.shared.sched import MEAN_SLOT_FLOOR, MODES, PUSHBACKS, StaggerSchedule
from rtcore.shared.shared_array import SharedArray
from rtcore.shared.timer import Timer, monotonic, sleep_until

__all__ = ["WallclockPool", "GAMEBOY_TAU_M"]

GAMEBOY_TAU_M = 1 / 59.7275
_CAP = 8192  # post timestamps kept per worker per setting


def _worker_main(q_in: Any, q_out: Any, times_name: str, counts_name: str) -> None:
    times = SharedArray.attach(times_name).array
    counts = SharedArray.attach(counts_name).array
    while True:
        cmd = q_in.get()
        if cmd is None:
            break
        sched_name, obs_name, act_name, wid, tau, sd, seed, staggered = cmd
        sched, obs, act = StaggerSchedule.attach(sched_name), ObsBoard.attach(obs_name), ActionBoard.attach(act_name)
        rng = np.random.default_rng([seed, wid])
        buf = np.empty(obs.stack_shape, obs.dtype)
        n = 0
        w = sched.join(wid) if staggered else wid
        while sched.wait_turn(w, timeout=30.0) if staggered else not sched.stopped:
            _, step = obs.read(out=buf)
            t0 = monotonic()
            sleep_until(t0 + max(1e-4, float(rng.normal(tau, sd))))
            if staggered:
                sched.report(w, monotonic() - t0)
                if not sched.wait_publish(w, timeout=30.0):
                    break
            act.post(int(step) % 4, int(step), w)
            times[wid, n % _CAP] = monotonic()
            n += 1
            counts[wid] = n
        if staggered:
            sched.leave(w)
        for o in (sched, obs, act):
            o.close()
        q_out.put(wid)


class WallclockPool:
    """``size`` spawned worker processes; :meth:`run` measures one setting with ``n <= size`` of them."""

    def __init__(self, size: int, tau_m: float = GAMEBOY_TAU_M) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1 (worker processes), got {size!r}")
        self.size, self.tau_m = size, float(tau_m)
        ctx = mp.get_context("spawn")
        self.times = SharedArray((size, _CAP), "float64")
        self.counts = SharedArray((size,), "int64")
        self.q_in = [ctx.Queue() for _ in range(size)]
        self.q_out = ctx.Queue()
        self.procs = [
            ctx.Process(target=_worker_main, args=(self.q_in[i], self.q_out, self.times.name, self.counts.name), daemon=True)
            for i in range(size)
        ]
        for p in self.procs:
            p.start()

    def run(
        self, tau_theta: float, n: int, mode: str = "max", ticks: int = 600, jitter: float = 0.1, seed: int = 0,
        pushback: str = "lattice", warm_ticks: int | None = None, min_interval: float | None = None,
    ) -> dict[str, float]:
        """One setting: ``warm_ticks`` (default two inference times) then ``ticks`` measured env ticks.

        Returns inaction (measured ticks without a fresh action), the action-interval coefficient of
        variation over the measured span, the schedule's tau_max and mean at the end, and the env timer's
        overruns. ``mode``: the schedule's (``"max"``: Algorithm 1, ``"mean"``: Algorithm 2) or ``"none"``
        (unstaggered, free-running workers).
        """
        if not 1 <= n <= self.size:
            raise ValueError(f"n must be in [1, {self.size}] (the pool's size), got {n}")
        if (mode not in MODES and mode != "none") or pushback not in PUSHBACKS:
            raise ValueError(f"mode must be one of {MODES + ('none',)} and pushback one of {PUSHBACKS}, "
                             f"got {mode!r}, {pushback!r}")
        staggered = mode != "none"
        warm = int(2 * tau_theta / self.tau_m) + 20 if warm_ticks is None else warm_ticks
        sched = StaggerSchedule(n, tau_theta, mode=mode if staggered else "max", heartbeat_timeout=max(2.0, 4 * tau_theta), pushback=pushback,
                                min_interval=MEAN_SLOT_FLOOR * self.tau_m if min_interval is None else min_interval)
        obs, act = ObsBoard((8,), "uint8"), ActionBoard(max_workers=n)
        frame, step = np.zeros(8, np.uint8), 0
        obs.publish(frame, step)
        self.counts.array[:] = 0
        try:
            for i in range(n):
                self.q_in[i].put((sched.name, obs.name, act.name, i, tau_theta, jitter * tau_theta, seed, staggered))
            deadline = time.monotonic() + 60
            while staggered and sched.live_workers < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("wall-clock workers did not join within 60 s")
                time.sleep(0.005)
            timer = Timer(self.tau_m)
            idle, t_start = 0, 0.0
            for k in range(warm + ticks):
                timer.wait(timeout=5.0)
                if k == warm:
                    t_start = monotonic()
                if act.take() is None and k >= warm:
                    idle += 1
                step += 1
                obs.publish(frame, step)
            t_end = monotonic()
            overruns = int(timer.stats().get("overruns", 0))
            tau_max, mean_tau = sched.tau_max, sched.mean_tau
            sched.stop()
            for _ in range(n):
                self.q_out.get(timeout=60)
        finally:
            for o in (sched, obs, act):
                o.close()
        counts = self.counts.array[:n].copy()
        stamps = np.sort(np.concatenate([self.times.array[i, : min(counts[i], _CAP)] for i in range(n)]))
        iv = np.diff(stamps[(stamps >= t_start) & (stamps <= t_end)])
        return {
            "inaction": idle / ticks,
            "interval_cv": float(iv.std() / iv.mean()) if iv.size > 1 else float("nan"),
            "tau_max": float(tau_max),
            "mean_tau": float(mean_tau),
            "timer_overruns": overruns,
        }

    def close(self) -> None:
        """Stop the worker processes and free the shared arrays."""
        for q in self.q_in:
            q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        self.times.close()
        self.counts.close()

    def __enter__(self) -> WallclockPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
