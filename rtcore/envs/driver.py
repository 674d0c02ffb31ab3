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

With an action history (``--action-history K``), ObsBoard.begin_apply/end_apply bracket step 1.
Step indices: the first observation is step 0 (or the step after the board's newest, when a driver
restarts on a board that was published to) and every tick adds 1; the first frame of a new episode
takes the index of the terminal frame it replaces (the terminal frame itself goes to the replay buffer
as ``next_obs``, not to the board). An action posted with ``obs_step = s`` and applied on the tick
whose current observation is step ``t`` has delay ``t - s``.

The accounting lives in shared memory (:class:`~rtcore.envs.driver_stats.DriverStatsBlock`, a float64
:class:`~rtcore.shared.shared_array.SharedArray`), so the runner and the metrics read it live from any process
(:meth:`EnvDriver.stats` returns a :class:`DriverStats` snapshot). A crash inside the env ends the
driver cleanly: the child reports the reason through a pipe (:attr:`EnvDriver.error`), closes its
attachments and exits with code 1; the parent's segments are unlinked by their owners as always.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from typing import Any, Callable

import numpy as np

from rtcore.envs.driver_stats import (_COST0, _DELAY0, _LATE0, _LEN0, _N_SCALARS, _RET0, DELAY_BINS, FREQUENCY, PID,
                                      RECENT, SEQ, STATE, STEPS, STOP, DriverStats, DriverStatsBlock, _log_bin)

DEFAULT_ACTIONS = ("noop", "random")  # what an inaction step applies (see EnvDriver)

# --- the loop ---------------------------------------------------------------------------------------


class _Loop:
    """The per-tick work, shared by the driver process and :meth:`EnvDriver.run_inline`."""

    def __init__(self, env: Any, obs_board: Any, action_board: Any, replay: Any, stream: int,
                 block: DriverStatsBlock, seed: int, first_step: int = 0, default_action: str = "noop") -> None:
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
        self.history = int(getattr(obs_board, "action_history", 0) or 0) > 0  # record applied actions on the board
        # "random" (the authors' --random_not_noop): an inaction step applies a uniformly random action
        self.random_default = default_action == "random"
        if self.random_default and self.n_actions is None:
            raise ValueError("default_action='random' needs an env with a Discrete action space")
        self._rng = np.random.default_rng([seed, stream, 0xDEFA])
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
        self.obs_step = max(first_step, last + 1 if isinstance(last, int) and last >= 0 else 0)

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
        if self.history:
            self.obs_board.begin_apply(self.obs_step)  # before the take: see ObsBoard.begin_apply
        took = self.action_board.take()
        if took is None:
            action = int(self._rng.integers(self.n_actions)) if self.random_default else self.default_action
            was_default, delay = True, 0
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
        if self.history:
            self.obs_board.end_apply(self.obs_step, int(action), was_default)
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
                 spin: float, realtime: bool, conn: Any, first_step: int = 0, default_action: str = "noop") -> None:
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
        loop = _Loop(env, obs_board, action_board, replay, stream, block, seed, first_step, default_action)
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
        first_step: the step index of the first observation (a resumed run continues its step count;
            a driver restarted on boards already published to continues after their newest step).
        default_action: what an inaction step applies: ``"noop"`` (the env's ``default_action``) or
            ``"random"`` (a uniformly random action from a stream seeded by ``seed`` and ``stream``: the
            authors' ``--random_not_noop``). Either way the step counts as inaction (``was_default``).
    """

    def __init__(self, env_fn: Callable[[], Any], obs_board: Any, action_board: Any, replay: Any = None,
                 stream: int = 0, frequency: float | None = None, seed: int = 0,
                 stats: DriverStatsBlock | None = None, spin: float = 200e-6, realtime: bool = False,
                 first_step: int = 0, default_action: str = "noop") -> None:
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a callable returning an env, got {env_fn!r}")
        if frequency is not None and not (isinstance(frequency, (int, float)) and 0 < frequency < 1e5):
            raise ValueError(f"frequency must be a positive number of ticks per second or None, got {frequency!r}")
        if isinstance(stream, bool) or not isinstance(stream, int) or stream < 0:
            raise ValueError(f"stream must be an int >= 0, got {stream!r}")
        if default_action not in DEFAULT_ACTIONS:
            raise ValueError(f"default_action must be one of {DEFAULT_ACTIONS}, got {default_action!r}")
        self.default_action = default_action
        self.env_fn = env_fn
        self.obs_board = obs_board
        self.action_board = action_board
        self.replay = replay
        self.stream = stream
        self.frequency = None if frequency is None else float(frequency)
        self.seed = int(seed)
        self.spin = float(spin)
        self.realtime = bool(realtime)
        if isinstance(first_step, bool) or not isinstance(first_step, int) or first_step < 0:
            raise ValueError(f"first_step must be an int >= 0, got {first_step!r}")
        self.first_step = first_step
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
                  self.seed, self.block, max_steps, self.spin, self.realtime, send, self.first_step,
                  self.default_action),
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
            loop = _Loop(env, self.obs_board, self.action_board, self.replay, self.stream, self.block, self.seed,
                         self.first_step, self.default_action)
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
