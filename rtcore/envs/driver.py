"""The env driver: one environment in its own process, stepping on the wall clock, never waiting for the agent.

Each tick of an rtcore :class:`~rtcore.Timer` (absolute deadlines ``start + k * period``, sleep then
spin), the driver

1. takes the newest unapplied action from the :class:`~rtcore.ActionBoard`, else the env's
   ``default_action`` (that step is *inaction*);
2. steps the env once;
3. publishes the new frame to the :class:`~rtcore.ObsBoard` with its step index (the board stacks
   frames; the driver hands over one);
4. adds the transition to the :class:`~rtcore.ReplayBuffer` with ``was_default`` and ``delay`` (env
   steps between the observation the action was computed from and the step it is applied at);
5. on an episode end, resets and carries on: the reset is wall-clock time too (the timer does not wait
   for it, ticks it overran are counted as missed) and is reported.

Step indices: the first observation is step 0 (or the step after the board's newest, when a driver
restarts on a board that was published to) and every tick adds 1; the first frame of a new episode
takes the index of the terminal frame it replaces (the terminal frame itself goes to the replay buffer
as ``next_obs``, not to the board). An action posted with ``obs_step = s`` and applied on the tick
whose current observation is step ``t`` has delay ``t - s``.

The accounting lives in shared memory (:class:`DriverStatsBlock`, a float64
:class:`~rtcore.shared.shared_array.SharedArray`), so the runner and the metrics read it live from any process
(:meth:`EnvDriver.stats` returns a :class:`DriverStats` snapshot). A crash inside the env ends the
driver cleanly: the child reports the reason through a pipe (:attr:`EnvDriver.error`), closes its
attachments and exits with code 1; the parent's segments are unlinked by their owners as always.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# --- the shared accounting block --------------------------------------------------------------------

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


# --- the loop ---------------------------------------------------------------------------------------


class _Loop:
    """The per-tick work, shared by the driver process and :meth:`EnvDriver.run_inline`."""

    def __init__(self, env: Any, obs_board: Any, action_board: Any, replay: Any, stream: int,
                 block: DriverStatsBlock, seed: int) -> None:
        self.env = env
        self.obs_board = obs_board
        self.action_board = action_board
        self.replay = replay
        self.stream = stream
        self.a = block.a
        self.seed = seed
        self.default_action = env.default_action
        frame = tuple(getattr(getattr(env, "observation_space", None), "shape", None) or ())
        for what, target in (("ObsBoard", obs_board), ("ReplayBuffer", replay)):
            shape = getattr(target, "obs_shape", None)
            if frame and shape is not None and tuple(shape) != frame:
                raise ValueError(f"the {what} holds frames of shape {tuple(shape)}, but the env's observations "
                                 f"have shape {frame}")
        self.n_actions = getattr(getattr(env, "action_space", None), "n", None)
        # Local mirrors of the shared scalars (flushed once per tick with one slice store).
        self.steps = self.default_steps = self.overruns = self.missed = 0
        self.resets = 0
        self.reset_time = self.reset_max = 0.0
        self.episodes = 0
        self.ep_return = 0.0
        self.ep_length = 0
        self.cost_sum = self.cost_max = self.emu_sum = 0.0
        self.late_sum = self.late_max = 0.0
        self.delay_sum = 0.0
        self.obs: Any = None
        # Continue the board's step sequence (a restarted driver on the same boards): steps must increase.
        last = getattr(obs_board, "step", -1)
        self.obs_step = last + 1 if isinstance(last, int) and last >= 0 else 0

    def _reset(self, now: Callable[[], float], first: bool) -> float:
        t0 = now()
        obs, _ = self.env.reset(seed=self.seed if first else None)  # later episodes continue the env's RNG
        dt = now() - t0
        self.obs = obs
        self.obs_board.publish(obs, self.obs_step, episode_start=True)
        if not first:
            self.resets += 1
            self.reset_time += dt
            self.reset_max = max(self.reset_max, dt)
        return dt

    def _flush(self, heartbeat: float, delay_bin: int = -1, cost_bin: int = -1, late_bin: int = -1,
               finished: tuple[float, int] | None = None) -> None:
        """Every shared write of a tick, inside one seqlock write section."""
        a = self.a
        a[SEQ] += 1.0
        if delay_bin >= 0:
            a[_DELAY0 + delay_bin] += 1.0
        if cost_bin >= 0:
            a[_COST0 + cost_bin] += 1.0
            a[_LATE0 + late_bin] += 1.0
        if finished is not None:
            i = (self.episodes - 1) % RECENT
            a[_RET0 + i], a[_LEN0 + i] = finished
        a[STEPS:_N_SCALARS] = (
            self.steps, self.default_steps, self.overruns, self.missed, self.resets, self.reset_time,
            self.reset_max, self.episodes, self.ep_return, self.ep_length, self.cost_sum, self.cost_max,
            self.emu_sum, self.late_sum, self.late_max, self.delay_sum, heartbeat, self.obs_step, 0.0,
        )
        a[SEQ] += 1.0

    def tick(self, now: Callable[[], float], t_wake: float, lateness: float, period: float) -> None:
        took = self.action_board.take()
        if took is None:
            action, was_default, delay = self.default_action, True, 0
        else:
            action, obs_step, _worker = took
            was_default = False
            delay = self.obs_step - int(obs_step)
            if delay < 0:
                raise RuntimeError(
                    f"an action was posted for observation step {obs_step}, newer than the newest published "
                    f"step {self.obs_step}: obs_step must be the step of the frame the action was computed from"
                )
            if self.n_actions is not None and not 0 <= int(action) < self.n_actions:
                raise ValueError(f"the agent posted action {action}, outside the env's Discrete({self.n_actions})")
        t_env = now()
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        t_env_end = now()
        emulator = getattr(self.env, "emulator_time", None)
        if emulator is None:
            emulator = t_env_end - t_env
        done = terminated or truncated
        self.replay_add(action, reward, terminated, truncated, next_obs if done else None, was_default, delay)
        self.steps += 1
        self.obs_step += 1
        self.ep_return += float(reward)
        self.ep_length += 1
        delay_bin = -1
        if was_default:
            self.default_steps += 1
        else:
            self.delay_sum += delay
            delay_bin = min(delay, DELAY_BINS - 1)
        reset_dt = 0.0
        finished = None
        if done:
            finished = (self.ep_return, self.ep_length)
            self.episodes += 1
            self.ep_return, self.ep_length = 0.0, 0
            reset_dt = self._reset(now, first=False)
        else:
            self.obs = next_obs
            self.obs_board.publish(next_obs, self.obs_step)
        t_end = now()
        work = t_end - t_wake - reset_dt
        cost = max(0.0, work - emulator)
        self.cost_sum += cost
        self.cost_max = max(self.cost_max, cost)
        self.emu_sum += emulator
        self.late_sum += lateness
        self.late_max = max(self.late_max, lateness)
        if work > period:
            self.overruns += 1
        self._flush(t_end, delay_bin, _log_bin(cost), _log_bin(lateness), finished)

    def replay_add(self, action: Any, reward: float, terminated: bool, truncated: bool, next_obs: Any,
                   was_default: bool, delay: int) -> None:
        if self.replay is not None:
            self.replay.add(self.stream, self.obs, action, reward, terminated, truncated, next_obs=next_obs,
                            was_default=was_default, delay=delay)

    def run(self, period: float, max_steps: int | None, paced: bool, stop_flag: Callable[[], bool],
            spin: float = 200e-6, realtime: bool = False) -> None:
        from rtcore.shared.timer import Timer, monotonic

        a = self.a
        a[FREQUENCY] = 1.0 / period if paced else float("inf")
        a[PID] = os.getpid()
        self._reset(monotonic, first=True)
        a[STATE] = 1.0
        self._flush(monotonic())
        if not paced:
            while (max_steps is None or self.steps < max_steps) and not stop_flag():
                t = monotonic()
                self.tick(monotonic, t, 0.0, float("inf"))
            return
        start = monotonic() + period
        timer = Timer(period, spin=min(spin, period / 2), start=start, realtime=realtime)
        last_k = -1
        try:
            while (max_steps is None or self.steps < max_steps) and not stop_flag():
                k = timer.wait(timeout=max(1.0, 4 * period))
                if k < 0:
                    break
                t_wake = monotonic()
                if k > last_k + 1:
                    self.missed += k - last_k - 1
                last_k = k
                self.tick(monotonic, t_wake, max(0.0, t_wake - (start + k * period)), period)
        finally:
            timer.stop()


def _driver_main(env_fn: Callable[[], Any], obs_board: Any, action_board: Any, replay: Any, stream: int,
                 frequency: float | None, seed: int, block: DriverStatsBlock, max_steps: int | None,
                 spin: float, realtime: bool, conn: Any) -> None:
    """The driver process. Ends cleanly on stop (or when its parent is gone); on an exception it reports
    the reason and exits 1."""
    import signal

    from rtcore.shared._liveness import die_with_parent, parent_gone

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    die_with_parent()  # a SIGKILLed parent cannot stop us: the kernel does (the check below covers the rest)
    env = None
    code = 0
    try:
        env = env_fn()
        period = 1.0 / frequency if frequency else float(env.frame_time)
        loop = _Loop(env, obs_board, action_board, replay, stream, block, seed)
        ticks = [0]

        def should_stop() -> bool:
            ticks[0] += 1
            if ticks[0] % 64 == 0 and parent_gone():  # orphaned (parent killed): stop
                return True
            return block.a[STOP] != 0.0

        loop.run(period, max_steps, True, should_stop, spin, realtime)
        block.a[STATE] = 2.0
    except BaseException as exc:  # report everything (KeyboardInterrupt too) and end cleanly
        block.a[STATE] = 3.0
        reason = f"{type(exc).__name__}: {exc}"
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        try:
            conn.send((reason, detail))
        except (OSError, ValueError):
            pass
        code = 1
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:
                pass
        conn.close()
    if code:
        raise SystemExit(code)


# --- the public handle ------------------------------------------------------------------------------


class EnvDriver:
    """Runs ``env_fn()`` in its own process on the wall clock (see the module docstring).

    Args:
        env_fn: a picklable callable building the env in the driver process, e.g.
            ``functools.partial(rtcore.make, "ALE/Pong-v5")``.
        obs_board: where each new frame is published (its frame shape must be the env's observation).
        action_board: where agents post actions; the driver takes the newest unapplied one each tick.
        replay: where transitions go (None: nowhere).
        stream: the replay stream this env writes.
        frequency: ticks per second (None: the env's native rate, ``1 / env.frame_time``).
        seed: the seed of the first reset (later episodes continue the env's random stream).
        stats: a :class:`DriverStatsBlock` to account into (None: the driver makes and owns one).
        spin: the timer's spin before each deadline (seconds; see :class:`rtcore.Timer`).
        realtime: ask the timer for SCHED_FIFO and 1 ns timer slack in the driver process.
    """

    def __init__(self, env_fn: Callable[[], Any], obs_board: Any, action_board: Any, replay: Any = None,
                 stream: int = 0, frequency: float | None = None, seed: int = 0,
                 stats: DriverStatsBlock | None = None, spin: float = 200e-6, realtime: bool = False) -> None:
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a callable returning an env, got {env_fn!r}")
        if frequency is not None and not (isinstance(frequency, (int, float)) and 0 < frequency < 1e5):
            raise ValueError(f"frequency must be a positive number of ticks per second or None, got {frequency!r}")
        if isinstance(stream, bool) or not isinstance(stream, int) or stream < 0:
            raise ValueError(f"stream must be an int >= 0, got {stream!r}")
        self.env_fn = env_fn
        self.obs_board = obs_board
        self.action_board = action_board
        self.replay = replay
        self.stream = stream
        self.frequency = None if frequency is None else float(frequency)
        self.seed = int(seed)
        self.spin = float(spin)
        self.realtime = bool(realtime)
        self._own_block = stats is None
        self.block = DriverStatsBlock.create() if stats is None else stats
        self._proc: Any = None
        self._conn: Any = None
        self._error: str | None = None
        self._error_detail: str | None = None

    # -- process control
    def start(self, max_steps: int | None = None) -> "EnvDriver":
        """Spawn the driver process (``max_steps``: stop by itself after that many steps)."""
        if self._proc is not None:
            raise RuntimeError("this EnvDriver was already started")
        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        self._conn = recv
        self.block.a[STOP] = 0.0
        self._proc = ctx.Process(
            target=_driver_main,
            args=(self.env_fn, self.obs_board, self.action_board, self.replay, self.stream, self.frequency,
                  self.seed, self.block, max_steps, self.spin, self.realtime, send),
            name=f"rtcore-env-driver-{self.stream}",
            daemon=True,
        )
        self._proc.start()
        send.close()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the driver to stop, wait up to ``timeout`` s, then terminate (and finally kill) it."""
        self.block.a[STOP] = 1.0
        p = self._proc
        if p is None:
            return
        p.join(timeout)
        if p.is_alive():
            p.terminate()
            p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)
        self._poll_error()

    def join(self, timeout: float | None = None) -> None:
        if self._proc is not None:
            self._proc.join(timeout)
            self._poll_error()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _poll_error(self) -> None:
        conn = self._conn
        if conn is None or self._error is not None:
            return
        try:
            if conn.poll():
                self._error, self._error_detail = conn.recv()
        except (EOFError, OSError):
            pass

    @property
    def error(self) -> str | None:
        """Why the driver ended, if it did not end by :meth:`stop` (None while fine)."""
        self._poll_error()
        if self._error is None and self._proc is not None and not self._proc.is_alive():
            code = self._proc.exitcode
            if code not in (0, None) and self.block.a[STOP] == 0.0:
                self._error = f"driver process exited with code {code} without reporting a reason"
        return self._error

    @property
    def error_detail(self) -> str | None:
        """The tail of the traceback behind :attr:`error`."""
        self._poll_error()
        return self._error_detail

    @property
    def stats(self) -> DriverStats:
        """A snapshot of the accounting, read from shared memory (live while the driver runs)."""
        return self.block.snapshot()

    # -- in-process
    def run_inline(self, max_steps: int, paced: bool = True) -> DriverStats:
        """The same loop in this process for ``max_steps`` steps (tests, benchmarks); ``paced=False`` runs
        as fast as the env goes. Returns the final stats."""
        env = self.env_fn()
        try:
            period = 1.0 / self.frequency if self.frequency else float(env.frame_time)
            loop = _Loop(env, self.obs_board, self.action_board, self.replay, self.stream, self.block, self.seed)
            loop.run(period, max_steps, paced, lambda: False, self.spin, self.realtime)
            self.block.a[STATE] = 2.0
        finally:
            env.close()
        return self.stats

    def close(self) -> None:
        """Stop the process if running and release the accounting block if this driver made it."""
        if self.alive:
            self.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._own_block:
            self.block.close()

    def __del__(self) -> None:
        p = getattr(self, "_proc", None)
        if p is not None and p.is_alive():  # dropped while running: do not leave a ticking orphan
            try:
                self.block.a[STOP] = 1.0
                p.join(1.0)
                if p.is_alive():
                    p.kill()
            except Exception:
                pass

    def __enter__(self) -> "EnvDriver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.alive else ("not started" if self._proc is None else f"exited {self.exitcode}")
        return f"EnvDriver({self.env_fn!r}, stream={self.stream}, {state})"
