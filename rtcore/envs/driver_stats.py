"""The env driver's accounting: a float64 block in shared memory that the driver writes every tick and
any process reads live (seqlock: a reader retries while the driver is mid-update).

Counts (steps, inaction steps, overruns, missed deadlines, resets, episodes), histograms of the delay
in steps and of durations on a log scale (driver cost per tick, lateness, reset time), and the recent
episodes' returns and lengths. :meth:`DriverStatsBlock.snapshot` turns it into :class:`DriverStats`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_VERSION = 2.0
DELAY_BINS = 1024  # delays 0..1022 in their own bin, >= 1023 in the last one (the paper's largest: 596)
LOG_BINS = 192  # durations: bin i >= 1 holds [2^((i-1)/8), 2^(i/8)) us (9% wide; up to 16 s), bin 0 < 1 us
RECENT = 100  # recent episodes kept (returns and lengths)

# Scalar slots (float64; counts stay exact below 2^53).
(
    SEQ,  # seqlock word: odd while the driver is updating the block
    VERSION,
    STATE,  # 0 created, 1 running, 2 stopped, 3 crashed
    STOP,  # set to 1 by the parent to ask the driver to stop
    PID,
    FREQUENCY,
    STEPS,
    DEFAULT_STEPS,
    OVERRUNS,  # ticks whose work (take, step, publish, add) took longer than the period
    MISSED,  # deadlines the timer skipped (the driver was still busy: overrun or reset)
    RESETS,
    RESET_TIME,  # total seconds spent in reset
    RESET_MAX,
    EPISODES,  # completed episodes
    EP_RETURN,  # the running episode's return so far
    EP_LENGTH,
    COST_SUM,  # seconds of driver work per tick excluding the emulator and resets, summed
    COST_MAX,
    EMU_SUM,  # seconds inside the emulator, summed
    LATE_SUM,
    LATE_MAX,
    DELAY_SUM,  # over agent (non-default) steps
    HEARTBEAT,  # rtcore.shared.timer.monotonic() at the end of the last tick
    OBS_STEP,  # step index of the newest published frame
    _RESERVED,
    _N_SCALARS,
) = range(26)
_DELAY0 = 32
_LATE0 = _DELAY0 + DELAY_BINS
_COST0 = _LATE0 + LOG_BINS
_RET0 = _COST0 + LOG_BINS
_LEN0 = _RET0 + RECENT
BLOCK_SIZE = _LEN0 + RECENT
_STATES = {0: "created", 1: "running", 2: "stopped", 3: "crashed"}


def _log_bin(seconds: float) -> int:
    us = seconds * 1e6
    if us < 1.0:
        return 0
    return min(LOG_BINS - 1, 1 + int(8.0 * math.log2(us)))


def _log_bin_value(i: int) -> float:
    """A bin's representative duration in seconds (its geometric middle)."""
    if i == 0:
        return 0.5e-6
    return 2.0 ** ((i - 1 + 0.5) / 8.0) * 1e-6


def _hist_quantile(hist: np.ndarray, q: float, value: Callable[[int], float]) -> float:
    total = hist.sum()
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(np.cumsum(hist), q * total, side="left"))
    return value(min(i, len(hist) - 1))


@dataclass
class DriverStats:
    """A snapshot of a driver's accounting (times in seconds)."""

    state: str
    frequency: float
    steps: int
    default_steps: int
    inaction_fraction: float
    delay_hist: np.ndarray = field(repr=False)  # delay_hist[d]: agent steps applied with delay d
    delay_mean: float
    delay_p50: float
    delay_p99: float
    lateness_mean: float
    lateness_p50: float
    lateness_p99: float
    lateness_max: float
    overruns: int
    missed_ticks: int
    resets: int
    reset_time_total: float
    reset_time_mean: float
    reset_time_max: float
    episodes: int
    episode_returns: list[float]  # the most recent completed episodes, oldest first
    episode_lengths: list[int]
    mean_return: float
    mean_length: float
    cost_mean: float  # the driver's own work per tick: everything but the emulator (and resets)
    cost_p50: float
    cost_p99: float
    cost_max: float
    emulator_mean: float
    last_obs_step: int
    heartbeat: float

    @property
    def driver_cost_mean(self) -> float:
        """Alias of ``cost_mean``: the driver's own seconds per tick, the emulator excluded."""
        return self.cost_mean

    @property
    def driver_cost_p99(self) -> float:
        return self.cost_p99

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for metrics and JSON (the delay histogram trimmed to its last non-zero bin)."""
        d = {k: v for k, v in self.__dict__.items() if k != "delay_hist"}
        nz = np.flatnonzero(self.delay_hist)
        d["delay_hist"] = self.delay_hist[: nz[-1] + 1].astype(int).tolist() if len(nz) else []
        return d


class DriverStatsBlock:
    """The driver's accounting in a float64 shared array, written by the driver, read by anyone.

    One writer (the driver process). Readers take a seqlock snapshot: the writer makes the sequence word
    odd, updates, makes it even; a reader copies the block and retries if the word was odd or changed.
    Numpy stores and loads are plain 8-byte accesses, so each field is never torn; the snapshot as a
    whole is consistent on x86-64 (stores and loads are not reordered with their own kind there). Pickles
    as its segment name, like every rtcore shared object.
    """

    def __init__(self, array: Any) -> None:
        self.shared = array
        self.a = array.array

    @classmethod
    def create(cls) -> "DriverStatsBlock":
        from rtcore.shared.shared_array import SharedArray

        block = cls(SharedArray((BLOCK_SIZE,), "float64"))
        block.a[VERSION] = _VERSION
        return block

    @property
    def name(self) -> str:
        return self.shared.name

    def __reduce__(self) -> Any:
        return (_attach_block, (self.shared,))

    def close(self) -> None:
        self.shared.close()

    def raw(self, retries: int = 1000) -> np.ndarray:
        """A consistent copy of the block."""
        a = self.a
        for _ in range(retries):
            s1 = a[SEQ]
            if int(s1) % 2 == 0:
                copy = a.copy()
                if a[SEQ] == s1:
                    return copy
            time.sleep(0)
        return a.copy()  # the writer is stuck mid-update (killed): fields are still individually valid

    def snapshot(self) -> DriverStats:
        a = self.raw()
        steps = int(a[STEPS])
        default = int(a[DEFAULT_STEPS])
        agent = steps - default
        delay_hist = a[_DELAY0 : _DELAY0 + DELAY_BINS].copy()
        late_hist = a[_LATE0 : _LATE0 + LOG_BINS]
        cost_hist = a[_COST0 : _COST0 + LOG_BINS]
        episodes = int(a[EPISODES])
        n_recent = min(episodes, RECENT)
        order = [(episodes - n_recent + i) % RECENT for i in range(n_recent)]
        returns = [float(a[_RET0 + j]) for j in order]
        lengths = [int(a[_LEN0 + j]) for j in order]
        resets = int(a[RESETS])
        ticks = max(steps, 1)
        return DriverStats(
            state=_STATES.get(int(a[STATE]), "unknown"),
            frequency=float(a[FREQUENCY]),
            steps=steps,
            default_steps=default,
            inaction_fraction=default / steps if steps else float("nan"),
            delay_hist=delay_hist,
            delay_mean=float(a[DELAY_SUM]) / agent if agent else float("nan"),
            delay_p50=_hist_quantile(delay_hist, 0.5, float),
            delay_p99=_hist_quantile(delay_hist, 0.99, float),
            lateness_mean=float(a[LATE_SUM]) / ticks if steps else float("nan"),
            # quantiles from 9%-wide bins, never above the exact maximum
            lateness_p50=min(_hist_quantile(late_hist, 0.5, _log_bin_value), float(a[LATE_MAX])),
            lateness_p99=min(_hist_quantile(late_hist, 0.99, _log_bin_value), float(a[LATE_MAX])),
            lateness_max=float(a[LATE_MAX]),
            overruns=int(a[OVERRUNS]),
            missed_ticks=int(a[MISSED]),
            resets=resets,
            reset_time_total=float(a[RESET_TIME]),
            reset_time_mean=float(a[RESET_TIME]) / resets if resets else float("nan"),
            reset_time_max=float(a[RESET_MAX]),
            episodes=episodes,
            episode_returns=returns,
            episode_lengths=lengths,
            mean_return=float(np.mean(returns)) if returns else float("nan"),
            mean_length=float(np.mean(lengths)) if lengths else float("nan"),
            cost_mean=float(a[COST_SUM]) / ticks if steps else float("nan"),
            cost_p50=min(_hist_quantile(cost_hist, 0.5, _log_bin_value), float(a[COST_MAX])),
            cost_p99=min(_hist_quantile(cost_hist, 0.99, _log_bin_value), float(a[COST_MAX])),
            cost_max=float(a[COST_MAX]),
            emulator_mean=float(a[EMU_SUM]) / ticks if steps else float("nan"),
            last_obs_step=int(a[OBS_STEP]),
            heartbeat=float(a[HEARTBEAT]),
        )


def _attach_block(shared: Any) -> DriverStatsBlock:
    return DriverStatsBlock(shared)


