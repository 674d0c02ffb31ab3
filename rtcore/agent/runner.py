"""Play a game in real time with a model, learning while it plays: ``rtcore run``.

    rtcore run --env ALE/Boxing-v5 --model impala:k=1 --workers auto --learners 2 --seconds 600

What a run does:

1. Measures the model's inference time (batch-1 p99, as a worker computes it) and adds
   ``--inference-delay``: that is tau_theta_max. ``--workers auto`` picks N* = ceil(tau_theta_max / tau_M).
2. Creates the shared objects (ObsBoard, ActionBoard, ReplayBuffer, StaggerSchedule, Turnstile,
   ParamStore, the shared optimizer state and target network, telemetry) and spawns N inference
   workers and M learners (``--mode sequential``: one process that acts and learns in turn).
3. When every worker has loaded its model, starts the environment driver on the wall clock.
4. Every ``--metrics-interval`` seconds: one row of metrics (CSV, TensorBoard), the live view, and
   a look at every child. A dead worker is dropped by the schedule (the others are re-staggered)
   and respawned; a dead learner is respawned (its slot, and an update it was killed in the middle
   of, are taken over). With ``--no-respawn`` the run goes on with the others. A dead environment,
   the sequential agent's death, or the loss of every worker ends the run.
5. At the end (time up, Ctrl-C, SIGTERM, a fault): stops every child, writes the final checkpoint,
   the summary (with every fault it lived through) and the plots, and unlinks every shared segment.
   Exit codes: 0, 130 after Ctrl-C, 143 after SIGTERM, 1 when a fault ended the run.

Nothing outlives the runner, also when it is SIGKILLed: every child dies with it (``PR_SET_PDEATHSIG``
and a parent check in each loop), and the segments it could not unlink are reclaimed by the next
run's start or by ``rtcore cleanup``.

``--json`` prints one JSON object with the summary (see :class:`RunSummary`).

Length: the run's whole life (set-up, spawn, supervise, stop, and what it does on every fault) is one
class read top to bottom; what it counts is in ``accounting``, its checkpoints in ``checkpoint``, child
plumbing in ``_proc``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rtcore._validate import OPTION_ERRORS, bad_option
from rtcore.agent._proc import Child, process_context
from rtcore.agent.config import RunConfig, add_config_arguments, config_from_args, make_run_dir, read_delay_schedule
from rtcore.agent.checkpoint import Identity, LearnerState, check_resumable, find_state, load_state, write_checkpoint
from rtcore.agent.accounting import RunAccounting, RunSummary, print_summary
from rtcore.agent.metrics import LiveView, MetricsWriter
from rtcore.agent.stall import kill_stalled_learners
from rtcore.agent.telemetry import Control, LearnerCol, PostIntervals, Telemetry, WorkerCol
from rtcore.shared.sched import MEAN_SLOT_FLOOR

__all__ = ["RunSummary", "run", "add_arguments", "main"]

STARTUP_TIMEOUT = 120.0  # seconds for the children to load their models before the env starts
STOP_TIMEOUT = 5.0       # seconds a child gets to leave its loop before it is killed
DEFAULT_PARAM_BUFFERS = 8  # parameter versions kept when --param-buffers is auto (see create_shared)


# ---------------------------------------------------------------------- helpers
def _env_kwargs(cfg: RunConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {"rom": cfg.rom} if cfg.rom else {}
    if cfg.default_action.isdigit():  # an action index: the env's no-op (or the one for an env without any)
        kw["default_action"] = int(cfg.default_action)
    return kw


def _canonical_device(device: str) -> str:
    """'cuda' -> 'cuda:0' (the mirrors are keyed by explicit devices); 'cpu' stays."""
    d = device.strip()
    return "cuda:0" if d == "cuda" else d


# "1": learners on the CPU keep the GPU-resident layout (the learner state a torch tensor passed to every
# learner by torch's multiprocessing, as CUDA IPC handles are on a GPU; versions written into a device mirror
# that CPU workers read): runs the protocol of the GPU path, minus CUDA itself, on a machine without a GPU.
# For tests; the CPU default (host shared memory) is as fast.
DEVICE_LAYOUT_ENV = "RTCORE_DEVICE_LAYOUT"


def learner_devices(cfg: RunConfig) -> list[str]:
    """The learners' devices: ``--learner-device`` (a comma-separated list spreads the learners over several
    GPUs, learner j on entry j mod len), else ``--device``."""
    spec = cfg.learner_device or cfg.device
    return [_canonical_device(d) for d in spec.split(",")]


def _make_env(env_id: str, kwargs: dict[str, Any]):
    import rtcore

    return rtcore.make(env_id, **kwargs)


# ---------------------------------------------------------------------- the run
class _Runner:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg = cfg.resolved()  # --agent rainbow: its flags on
        self.model_spec = cfg.model_spec()  # the model with the dueling/noisy/distributional flags applied
        self.run_dir = make_run_dir(cfg)
        self.closers: list[Any] = []
        self.children: list[Child] = []
        self.driver: Any = None
        self.stopped_by = "time"
        self.env_error: str | None = None
        self.faults: list[str] = []
        self.stalls_seen = 0
        self.accounting = RunAccounting()
        self.retiring: list[Child] = []  # workers elastic N told to leave, until they have exited
        self._quiet_since: float | None = None
        self._want_since: float | None = None
        self.start: LearnerState | None = None  # the checkpoint a resumed run (or play) starts from
        self.params_only = False                # play: take only the parameters from it
        self.record: str | None = None          # play: write the frames to this GIF/MP4
        self.step_offset = 0                    # env steps before this run (resumed)
        self.time_offset = 0.0                  # seconds before this run (resumed)
        self.seed = cfg.seed                    # of the children and the env (reseeded on resume)

    def start_from(self, path: Path, state: LearnerState, params_only: bool = False) -> None:
        """Starts from a checkpoint: the whole learner state (resume), or only its parameters (play)."""
        self.start, self.start_path, self.params_only = state, path, params_only
        if not params_only:
            self.seed = self.cfg.seed + 7919 * (state.resumes + 1)  # new exploration, not a replay of the old

    def log(self, msg: str) -> None:
        if not self.cfg.quiet and not self.cfg.json:
            print(msg, file=sys.stderr, flush=True)

    # --- setup
    def measure(self) -> None:
        import torch

        from rtcore.models import build_model
        from rtcore.models.export import measure_latency, save_model

        cfg = self.cfg
        env = _make_env(cfg.env, _env_kwargs(cfg))
        try:
            # the observation spec comes from the env (rtcore.make normalizes it: rtcore.envs.adapter)
            self.obs_shape = tuple(int(d) for d in env.observation_space.shape)
            self.obs_dtype = np.dtype(env.observation_space.dtype)
            self.n_actions = int(env.action_space.n)
            frame_time = getattr(env, "frame_time", None)
        finally:
            env.close()
        if cfg.frequency:
            self.tau_m = 1.0 / cfg.frequency
        elif frame_time:
            self.tau_m = float(frame_time)
        else:
            raise ValueError(f"env {cfg.env!r} has no frame_time (its native seconds per step): give the step "
                             f"frequency with --frequency HZ")
        self.frame_time = self.tau_m
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.model_spec, cfg.frame_stack, self.n_actions, obs_shape=self.obs_shape,
                                 action_history=cfg.action_history)
        self.numel = sum(p.numel() for p in self.model.parameters())
        self.identity = Identity(env=cfg.env, model=self.model_spec, obs_shape=tuple(int(x) for x in self.obs_shape),
                                 obs_dtype=self.obs_dtype.name, n_actions=self.n_actions, frame_stack=cfg.frame_stack,
                                 numel=int(self.numel), action_history=cfg.action_history)
        if self.start is not None:
            self.identity.check(self.start.identity, str(self.start_path))
        fmt = {"script": ("script", "model.pt"), "export": ("export", "model.pt2"), "eager": ("checkpoint", "model.ckpt"),
               "frozen": ("script", "model.pt")}
        kind, filename = fmt[cfg.backend]
        self.model_path = str((self.run_dir / filename).resolve())
        save_model(self.model, self.model_path, format=kind)
        frozen = cfg.backend == "frozen"
        if frozen:  # refused here, with the reason, rather than in every worker
            from rtcore.models import example_history, example_input
            from rtcore.models.export import script_model
            from rtcore.models.frozen import RefreshableFrozen

            example = (example_input(self.model),) + ((example_history(self.model),) if cfg.action_history else ())
            RefreshableFrozen(script_model(copy.deepcopy(self.model).eval()), example, seed=cfg.seed)
        self.log(f"rtcore: measuring {self.model_spec} ({self.numel:,} parameters) on {cfg.device} ...")
        self.latency = measure_latency(self.model, cfg.device, iters=cfg.latency_iters, warmup=5,
                                       backend="script" if frozen else cfg.backend, frozen=frozen, threads=1,
                                       seed=cfg.seed)
        self.tau_theta_max = cfg.tau_theta if cfg.tau_theta else self.latency["p99"] + cfg.inference_delay
        from rtcore import n_star

        self.n_star = int(n_star(self.tau_theta_max, self.tau_m))
        if cfg.mode == "sequential":
            self.n_workers = 1
        elif cfg.fixed_workers is not None:
            self.n_workers = cfg.fixed_workers
        else:
            n = int(n_star(self.tau_theta_max * cfg.worker_headroom, self.tau_m))
            if cfg.worker_headroom > 1.0:
                n = max(n, 2)  # one slow pass of a lone worker always leaves a gap
            self.n_workers = max(1, min(cfg.max_workers, n))
        # slots of the schedule, rows of the telemetry, reader slots of the ParamStore: elastic N may grow to max_workers
        self.n_workers_initial = self.n_workers
        self.elastic = cfg.elastic and cfg.mode == "staggered" and cfg.fixed_workers is None
        self.max_workers_run = max(self.n_workers, cfg.max_workers) if self.elastic else self.n_workers
        self.n_learners = cfg.learners if cfg.mode == "staggered" else (1 if cfg.learners > 0 else 0)
        self.log(f"rtcore: tau_theta p50 {self.latency['p50'] * 1e3:.2f} ms, p99 {self.latency['p99'] * 1e3:.2f} ms"
                 f" + emulated {cfg.inference_delay * 1e3:.1f} ms -> tau_theta_max {self.tau_theta_max * 1e3:.2f} ms;"
                 f" tau_M {self.tau_m * 1e3:.2f} ms; N* = {self.n_star}; {cfg.mode}: {self.n_workers} worker(s),"
                 f" {self.n_learners} learner(s)")

    def create_shared(self) -> None:
        import rtcore
        from rtcore.shared.shared_array import SharedArray

        cfg = self.cfg

        def keep(obj: Any) -> Any:
            self.closers.append(obj)
            return obj

        self.obs_board = keep(rtcore.ObsBoard(self.obs_shape, dtype=self.obs_dtype.name, frame_stack=cfg.frame_stack,
                                              action_history=cfg.action_history))
        self.action_board = keep(rtcore.ActionBoard())
        self.replay = keep(rtcore.ReplayBuffer(cfg.replay_capacity, self.obs_shape, obs_dtype=self.obs_dtype.name,
                                               frame_stack=cfg.frame_stack, n_step=cfg.n_step, gamma=cfg.gamma,
                                               prioritized=cfg.prioritized, alpha=cfg.priority_alpha,
                                               beta=cfg.priority_beta, action_history=cfg.action_history))
        self.schedule = None
        if cfg.mode == "staggered":
            self.schedule = keep(rtcore.StaggerSchedule(self.max_workers_run, self.tau_theta_max, mode=cfg.stagger,
                                                        heartbeat_timeout=cfg.heartbeat_timeout,
                                                        pushback=cfg.pushback, tau_window=cfg.tau_window,
                                                        min_interval=MEAN_SLOT_FLOOR * self.tau_m))
        self.turnstile = None
        if cfg.mode == "staggered" and self.n_learners > 0:
            # learners beat from a thread, also through a long gradient, so silence means a dead process
            self.turnstile = keep(rtcore.Turnstile(self.n_learners, heartbeat_timeout=max(2.0, cfg.heartbeat_timeout)))
        # Sized by use (rtcore/shared/params.py): a reader slot per process that can pin (every worker the
        # run may start, every learner, the runner's checkpoint, spares for respawns whose dead slot is not
        # reclaimed yet), but buffers only for the versions pinned at once.
        self.param_readers = cfg.param_readers(self.max_workers_run, self.n_learners)
        self.param_buffers = cfg.param_buffers or min(self.param_readers + 2, DEFAULT_PARAM_BUFFERS)
        self.params = keep(rtcore.ParamStore(self.numel, buffers=self.param_buffers, max_readers=self.param_readers))
        from rtcore.shared.params import bind_flat

        flat = bind_flat(self.model).detach().numpy().copy()
        st = self.start
        params = st.params if st is not None else flat  # resume and play start from the checkpoint's parameters
        resume = st is not None and not self.params_only
        self.params.publish(params)
        # the learners' state (master parameters, Adam moments, target): host shared memory, or on each
        # learner GPU (one replica per GPU, CUDA IPC-shared by the learners on it, kept in step)
        from rtcore.agent.optim import STATE_ROWS, init_learner_state

        opt_step = st.opt_step if resume else 0
        rows = init_learner_state(np.zeros((STATE_ROWS, self.numel), np.float32), params,
                                  target=st.target if resume else flat, moments=st.moments if resume else None,
                                  opt_step=opt_step)
        self.learner_devices = learner_devices(cfg)
        self.mirrors: dict[str, Any] = {}
        if all(d == "cpu" for d in self.learner_devices) and os.environ.get(DEVICE_LAYOUT_ENV) != "1":
            self.state = keep(SharedArray((STATE_ROWS, self.numel), "float32"))
            self.state.array[:] = rows
        else:
            import torch

            from rtcore.agent.dqn import new_learner_state
            from rtcore.shared.params import device_mirror

            devs = sorted(set(self.learner_devices))
            if "cpu" in devs and len(devs) > 1:
                raise ValueError(f"learner_device = {cfg.learner_device!r}: learners on the CPU and on GPUs cannot "
                                 f"share one learner state; use all-CPU or all-GPU learners")
            self.state = {d: new_learner_state(flat, d) for d in devs}
            for t in self.state.values():
                t.copy_(torch.from_numpy(rows))
            self.mirrors = {d: device_mirror(self.params, d) for d in devs}
        self.telemetry = Telemetry(self.max_workers_run, max(1, self.n_learners))
        self.closers.append(self.telemetry)
        self.telemetry.control[Control.INFERENCE_DELAY_NS] = int(round(cfg.inference_delay * 1e9))
        self.telemetry.control[Control.ACTIVE_WORKERS] = self.n_workers
        from rtcore.agent.optim import StepJournal

        StepJournal(self.telemetry.control).reset(opt_step)  # nothing pending (resumed: the saved step)
        if resume:  # the whole learner state
            c = self.telemetry.control
            c[Control.UPDATES], c[Control.TARGET_VERSION] = st.updates, st.target_version
            self.step_offset, self.time_offset = st.env_steps, st.seconds

    def spawn(self) -> None:
        from rtcore.agent.inference import ActorConfig, WorkerSpec, worker_main
        from rtcore.agent.dqn import LearnerConfig
        from rtcore.agent.learner import LearnerSpec, learner_main
        from rtcore.agent.sequential import SequentialSpec, sequential_main

        cfg = self.cfg
        ctx = process_context()
        actor = ActorConfig(model_path=self.model_path, device=cfg.device, backend=cfg.backend, n_actions=self.n_actions,
                            epsilon_start=cfg.epsilon_start, epsilon_end=cfg.epsilon_end,
                            epsilon_decay_steps=cfg.epsilon_decay_steps, inference_delay=cfg.inference_delay,
                            seed=self.seed, action_history=cfg.action_history)
        lcfg = LearnerConfig(batch_size=cfg.batch_size, lr=cfg.lr, adam_eps=cfg.adam_eps, double_dqn=cfg.double_dqn,
                             target_update=cfg.target_update, max_grad_norm=cfg.max_grad_norm,
                             prioritized=cfg.prioritized, priority_beta=cfg.priority_beta,
                             priority_beta_steps=cfg.priority_beta_steps, priority_eps=cfg.priority_eps,
                             learn_on=cfg.learn_on)

        worker_dev = _canonical_device(cfg.device)
        host = not self.mirrors or worker_dev not in self.mirrors  # some reader needs the host buffers
        self.host_versions = host
        state, mirrors = self.learner_state()

        def learner_spec(j: int) -> LearnerSpec:
            return LearnerSpec(learner=j, model_spec=self.model_spec, in_frames=cfg.frame_stack, n_actions=self.n_actions,
                               config=lcfg, device=self.learner_devices[j % len(self.learner_devices)],
                               threads=cfg.learner_threads, nice=cfg.learner_nice if cfg.mode == "staggered" else 0,
                               learning_starts=cfg.learning_starts, updates_per_step=cfg.updates_per_step,
                               params=self.params, replay=self.replay, turnstile=self.turnstile, state=state,
                               telemetry=self.telemetry, obs_board=self.obs_board, seed=self.seed + 1000 + j,
                               mirrors=mirrors, host=host,
                               obs_shape=self.obs_shape, action_history=cfg.action_history)

        self._worker_mirror = self.mirrors.get(worker_dev)

        if cfg.mode == "sequential":
            spec = SequentialSpec(order=cfg.sequential_order, actor=actor, learner=learner_spec(0),
                                  action_board=self.action_board, frame_stack=cfg.frame_stack, obs_shape=self.obs_shape,
                                  realtime=cfg.realtime, obs_dtype=self.obs_dtype.name)
            if self.n_learners == 0:
                spec.learner.learning_starts = 1 << 62  # act only
            self.children.append(Child("agent", 0, sequential_main, spec, ctx))
            return
        def worker_spec(w: int) -> WorkerSpec:
            a = ActorConfig(**{**asdict(actor), "seed": self.seed + 1 + w})
            return WorkerSpec(worker=w, actor=a, obs_board=self.obs_board, action_board=self.action_board,
                              schedule=self.schedule, params=self.params, telemetry=self.telemetry,
                              frame_stack=cfg.frame_stack, obs_shape=self.obs_shape, realtime=cfg.realtime,
                              obs_dtype=self.obs_dtype.name, mirror=self._worker_mirror)

        self._new_worker = lambda w: Child("worker", w, worker_main, worker_spec(w), ctx)
        for w in range(self.n_workers):
            self.children.append(self._new_worker(w))
        for j in range(self.n_learners):
            self.children.append(Child("learner", j, learner_main, learner_spec(j), ctx))

    def write_processes(self) -> None:
        """``processes.json``: the pid of every child, for whoever needs to find them (tests, a debugger)."""
        procs = [{"kind": c.kind, "index": c.index, "pid": c.proc.pid, "restarts": c.restarts} for c in self.children]
        if self.driver is not None:
            procs.append({"kind": "env", "index": 0, "pid": self.driver.pid, "restarts": 0})
        tmp = self.run_dir / "processes.json.tmp"
        tmp.write_text(json.dumps({"runner": os.getpid(), "children": procs}, indent=1))
        os.replace(tmp, self.run_dir / "processes.json")

    def wait_ready(self) -> None:
        """Until every worker has loaded its model and every learner has run a warm-up gradient (then the
        env may start: nothing allocates or compiles for the first time in the middle of the run)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        actors = [c for c in self.children if c.kind in ("worker", "agent")]
        learners = [c for c in self.children if c.kind == "learner"]
        while True:
            if (all(self.telemetry.workers[c.index, WorkerCol.STARTS] >= 1 for c in actors)
                    and all(self.telemetry.learners[c.index, LearnerCol.READY] >= 1 for c in learners)):
                return
            for c in self.children:
                if c.dead:
                    raise RuntimeError(f"{c.kind} {c.index} died while starting (exit code {c.proc.exitcode}); "
                                       f"its traceback is above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"inference processes did not load the model within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def start_env(self) -> None:
        from rtcore.envs.driver import EnvDriver

        cfg = self.cfg
        env_fn = functools.partial(_make_env, cfg.env, _env_kwargs(cfg))
        if self.record:
            from rtcore.agent.recording import recording_env

            env_fn = functools.partial(recording_env, env_fn, self.record)
        self.driver = EnvDriver(env_fn, self.obs_board, self.action_board, replay=self.replay, stream=0,
                                frequency=1.0 / self.tau_m, seed=self.seed, realtime=cfg.realtime,
                                first_step=self.step_offset,
                                default_action="random" if cfg.default_action == "random" else "noop")
        self.driver.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.obs_board.published < 1:  # the run's clock starts at the env's first frame
            if not self.driver.alive:
                raise RuntimeError(f"the env driver died while starting: {self.driver.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the env driver published no frame within {STARTUP_TIMEOUT:.0f} s")
            try:
                self.obs_board.wait_step(-1, 0.05)
            except TimeoutError:
                pass

    # --- the loop
    def supervise(self, t_end: float, writer: MetricsWriter, view: LiveView) -> None:
        cfg = self.cfg
        intervals = PostIntervals(self.telemetry)
        next_row = time.monotonic() + cfg.metrics_interval
        next_ckpt = time.monotonic() + cfg.checkpoint_interval if cfg.checkpoint_interval > 0 else math.inf
        while True:
            now = time.monotonic()
            if not self.driver.alive:
                err = getattr(self.driver, "error", None)
                self.env_error = str(err) if err else f"env driver exited with code {getattr(self.driver, 'exitcode', None)}"
                self.stopped_by = "env"
                break
            if self.check_children(intervals):
                break
            self.apply_delay_schedule(now)
            if self.elastic:
                self.resize_workers(now, intervals)
            if now >= next_row or now >= t_end:
                row = self.accounting.row(self, intervals)
                writer.write(row)
                view.update(row)
                next_row += cfg.metrics_interval
            if now >= next_ckpt:
                self.checkpoint("latest")
                next_ckpt += cfg.checkpoint_interval
            if now >= t_end:
                break
            time.sleep(min(0.05, max(0.0, min(next_row, t_end) - time.monotonic())))

    def apply_delay_schedule(self, now: float) -> None:
        """``--inference-delay-schedule``: writes each step's emulated latency into the workers' control cell."""
        sched = getattr(self, "_delay_steps", None)
        if sched is None:
            sched = self._delay_steps = read_delay_schedule(self.cfg.inference_delay_schedule)
        while sched and now - self.t_env0 >= sched[0][0]:
            t, delay = sched.pop(0)
            self.telemetry.control[Control.INFERENCE_DELAY_NS] = int(round(delay * 1e9))
            self.log(f"rtcore: t = {t:.1f} s: emulated inference delay -> {delay * 1e3:.1f} ms")

    def resize_workers(self, now: float, intervals: PostIntervals) -> None:
        """Elastic N: spawn workers as soon as tau_theta_max outgrows N * tau_M; retire one after a quiet spell.

        Needed: N_need = ceil(tau_max / tau_M) (the schedule's measured tau_max: one slow pass raises it
        at once), wanted: ceil(headroom * tau_max / tau_M), both capped by --max-workers. Fewer workers
        than needed means inaction now, so the runner spawns up to the wanted count at once; more than
        wanted for --elastic-quiet seconds (tau_max falls as the schedule's tau window forgets the slow
        passes) retires the highest-numbered worker, one per quiet spell. Joining and leaving re-stagger
        the schedule (its lattice follows the live workers)."""
        cfg = self.cfg
        tau = float(self.schedule.tau_max)
        need = min(self.max_workers_run, max(1, math.ceil(tau / self.tau_m - 1e-9)))
        want = min(self.max_workers_run, max(need, math.ceil(cfg.worker_headroom * tau / self.tau_m - 1e-9)))
        if cfg.worker_headroom > 1.0:
            want = min(self.max_workers_run, max(want, 2))
        n = self.n_workers
        if need > n or (want > n and self._grow_pending(now)):
            self._quiet_since = None
            self.log(f"rtcore: tau_max {tau * 1e3:.1f} ms > {n} x tau_M: {n} -> {want} workers")
            for w in range(n, want):
                self.telemetry.workers[w, WorkerCol.POSTS] = 0
                intervals.reset_worker(w)
                self.children.append(self._new_worker(w))
            self.workers_spawned = getattr(self, "workers_spawned", 0) + want - n
            self.n_workers = want
            self.telemetry.control[Control.ACTIVE_WORKERS] = want
            self.max_workers_seen = max(getattr(self, "max_workers_seen", 0), want)
            self.write_processes()
            return
        if want < n:
            if self._quiet_since is None:
                self._quiet_since = now
            elif now - self._quiet_since >= cfg.elastic_quiet:
                self._quiet_since = now
                self.n_workers = n - 1
                self.workers_retired = getattr(self, "workers_retired", 0) + 1
                self.telemetry.control[Control.ACTIVE_WORKERS] = n - 1  # worker n - 1 leaves at its next turn
                self.retiring.extend(c for c in self.children if c.kind == "worker" and c.index == n - 1)
                self.children = [c for c in self.children if not (c.kind == "worker" and c.index == n - 1)]
                self.log(f"rtcore: tau_max {tau * 1e3:.1f} ms: {n} -> {n - 1} workers")
        else:
            self._quiet_since = None
        for c in [c for c in self.retiring if c.dead]:
            self.retiring.remove(c)

    def _grow_pending(self, now: float) -> bool:
        """Headroom (want > n but not yet needed) grows N only after it has been wanted for a second, so a
        single slow pass does not spawn spare workers."""
        if self._want_since is None:
            self._want_since = now
        if now - self._want_since >= 1.0:
            self._want_since = None
            return True
        return False

    def fault(self, msg: str) -> None:
        """A fault the run lives through: said now, and kept for the summary."""
        self.faults.append(msg)
        self.log(f"rtcore: {msg}")

    def kill_stalled_learners(self) -> None:
        """SIGKILLs a learner in the turnstile whose heartbeat thread has been silent for half the turnstile's
        timeout (stopped or descheduled): the turnstile would hand its turn on at the full timeout, and a
        learner that woke up after that would write the shared learner state out of turn
        (:mod:`rtcore.agent.optim`). Dead, it is respawned like any dead learner."""
        ts = getattr(self, "turnstile", None)
        if ts is None or self.telemetry.stopping:
            return
        pids = {c.index: c.proc.pid for c in self.children if c.kind == "learner" and not c.lost and not c.dead}
        kill_stalled_learners(self.telemetry.learners, pids, ts.heartbeat_timeout, self.fault)

    def check_children(self, intervals: PostIntervals) -> bool:
        """Respawns (or, with --no-respawn, writes off) dead children; True when the run must end."""
        if self.schedule is not None and self.schedule.stalls > self.stalls_seen:
            n = self.schedule.stalls - self.stalls_seen
            self.stalls_seen += n
            self.fault(f"{n} inference pass(es) stalled (longer than {self.schedule.horizon:.1f} s: a stopped or "
                       f"descheduled process); not taken as inference times, the workers re-staggered")
        self.kill_stalled_learners()
        for c in self.children:
            if c.lost or not c.dead or self.telemetry.stopping:
                continue
            code = c.proc.exitcode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if c.kind == "agent":
                c.lost = True
                self.fault(f"the sequential agent died ({how}); the run ends")
                self.stopped_by = "agent"
                return True
            if not self.cfg.respawn:
                c.lost = True
                left = sum(not x.lost for x in self.children if x.kind == c.kind)
                self.fault(f"{c.kind} {c.index} died ({how}); not respawned (--no-respawn): {left} {c.kind}(s) go on"
                           + (" (re-staggered)" if c.kind == "worker" and left else ""))
                if c.kind == "worker" and left == 0:
                    self.fault("no worker left; the run ends")
                    self.stopped_by = "workers"
                    return True
                continue
            self.fault(f"{c.kind} {c.index} died ({how}); respawned")
            # the schedule (turnstile) drops it once its heartbeat is older than the timeout, and the
            # survivors re-stagger (the turn moves on); the new process joins the same slot once it is free
            if c.kind == "worker":
                self.telemetry.workers[c.index, WorkerCol.POSTS] = 0
                intervals.reset_worker(c.index)
            c.restarts += 1
            c.start()
            self.write_processes()
        return False

    def checkpoint(self, tag: str, final: bool = False) -> Path:
        """Writes ``checkpoints/<tag>.pt`` (the model) and ``<tag>.state.pt`` (the whole learner state).
        ``final`` (every learner has stopped): from the learners' master copy, which holds every applied
        update even when the last publish was skipped."""
        return write_checkpoint(self, tag, final=final)

    def learner_state(self) -> tuple[Any, Any]:
        """``(state, mirrors)`` as learners take them: the host shared-memory state (no mirrors), or one
        replica and one mirror per learner GPU, in device order."""
        if not self.mirrors:
            return self.state, None
        devs = sorted(self.mirrors)
        return [self.state[d] for d in devs], [self.mirrors[d] for d in devs]

    def settle_learners(self) -> None:
        """Every learner has stopped: an optimizer step the last one died in is rolled back or completed
        here (rtcore.agent.dqn.settle_journal), so the final checkpoint's update count and target match
        its step."""
        if self.n_learners <= 0 or getattr(self, "state", None) is None:
            return
        from rtcore.agent.dqn import settle_journal
        from rtcore.agent.learner import state_arrays

        state, mirrors = self.learner_state()
        how = settle_journal(self.params, state_arrays(state), self.telemetry.control, mirrors=mirrors,
                             host=getattr(self, "host_versions", True))
        if how is not None:
            self.fault(f"the last learner stopped inside an optimizer step: {how} at the end of the run")

    def learner_arrays(self, final: bool = False) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int]:
        """``(version, params, target, moments, opt_step)`` as host float32 arrays, for a checkpoint: the
        moments are those of optimizer step ``opt_step`` (one committed step, read whole while learners
        apply). During the run the parameters are the newest published version (one whole version: pinned);
        ``final``: the master copy of ``opt_step``, exact (every learner has stopped)."""
        from rtcore.agent.optim import read_learner_state

        state = self.state.array if not self.mirrors else next(iter(self.state.values()))
        opt_step, master, target, moments = read_learner_state(state, self.telemetry.control)
        if final and self.n_learners > 0:
            return self.params.version, master, target, moments, opt_step
        if self.mirrors:
            mirror = next(iter(self.mirrors.values()))
            version, b = self.params.pin_buffer()
            try:
                params = mirror[b].cpu().numpy().copy()  # (a device-to-host copy waits for the device)
            finally:
                self.params.unpin()
            return version, params, target, moments, opt_step
        with self.params.read() as (version, view):
            return version, view.copy(), target, moments, opt_step

    def stop_all(self) -> None:
        # the env first: once it stops, nothing more is counted, so the agents' shutdown costs no steps
        if self.driver is not None:
            try:
                self.driver.stop(STOP_TIMEOUT)
            except Exception as exc:  # the run's outcome stands; say what went wrong
                self.log(f"rtcore: stopping the env driver: {type(exc).__name__}: {exc}")
            self.final_stats = self.driver.stats
            if self.schedule is not None:
                self.final_target = float(self.schedule.action_interval)
                self.final_stalls = int(self.schedule.stalls)
        if getattr(self, "telemetry", None) is not None:
            self.telemetry.control[Control.STOP] = 1
        for obj in (getattr(self, "schedule", None), getattr(self, "turnstile", None)):
            if obj is not None:
                obj.stop()  # wakes every wait at once
        deadline = time.monotonic() + STOP_TIMEOUT
        for c in self.children + self.retiring:
            c.stop(deadline)

    def close_shared(self) -> None:
        if self.driver is not None:
            self.driver.close()
        for obj in reversed(self.closers):
            try:
                obj.close()
            except Exception:
                pass
        self.closers.clear()

    # --- summary
class _Terminate(BaseException):
    """SIGTERM, turned into an exception in the main thread so the run shuts down like on Ctrl-C."""


def run(config: RunConfig | None = None) -> RunSummary:
    """Runs ``config`` (default: ``RunConfig()``) to the end and returns its summary.

    Ctrl-C or SIGTERM ends the run early, cleanly (the summary says ``stopped_by``). No process or
    shared-memory segment outlives the call.
    """
    cfg = (config or RunConfig()).validate()
    if cfg.resume and not cfg.run_dir:
        cfg = dataclasses.replace(cfg, run_dir=cfg.resume)

    def prepare(r: _Runner) -> None:
        if cfg.resume:
            path = find_state(cfg.resume)
            r.start_from(path, load_state(path))

    return execute(cfg, prepare)


def execute(cfg: RunConfig, prepare: Callable[[_Runner], None] | None = None) -> RunSummary:
    """Runs a validated ``cfg``; ``prepare(runner)`` may set where it starts from (resume, play)."""
    from rtcore.shared._shm import reclaim_dead_segments

    r = _Runner(cfg)
    # what killed runs (SIGKILL, OOM) left in /dev/shm: only segments whose creator is dead
    gone = reclaim_dead_segments()
    r.reclaimed_segments = len(gone)
    if gone:
        r.log(f"rtcore: reclaimed {len(gone)} shared-memory segment(s) ({sum(s.size for s in gone) / 2**20:.1f} MiB) "
              f"left by dead processes")
    if prepare is not None:
        prepare(r)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise _Terminate()

        old_term = signal.signal(signal.SIGTERM, on_term)
    writer = view = None
    t_start = time.monotonic()
    summary = None
    try:
        try:
            r.measure()  # also refuses a checkpoint of another model or env, before config.json changes
            (r.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            r.create_shared()
            r.spawn()
            r.wait_ready()
            writer = MetricsWriter(r.run_dir, tensorboard=cfg.tensorboard,
                                   append=r.start is not None and not r.params_only)
            if writer.tensorboard_error:
                r.log(f"rtcore: {writer.tensorboard_error}")
            r.start_env()
            r.t_env0 = time.monotonic()
            r.write_processes()
            t_start = r.t_env0
            view = LiveView(not cfg.quiet and not cfg.json, cfg.seconds, f"rtcore {cfg.env} {cfg.model} ({cfg.mode})")
            r.supervise(r.t_env0 + cfg.seconds, writer, view)
            r.t_stop = time.monotonic()
        except KeyboardInterrupt:
            r.stopped_by = "interrupt"
            r.t_stop = time.monotonic()
        except _Terminate:
            r.stopped_by = "sigterm"
            r.t_stop = time.monotonic()
        except Exception as exc:
            if r.driver is None:  # before the env started: nothing to sum up
                raise
            # a fault in the runner itself mid-run: the run still ends with its summary and checkpoint
            r.stopped_by = "error"
            r.t_stop = time.monotonic()
            r.fault(f"the runner failed: {type(exc).__name__}: {exc}")
            import traceback

            traceback.print_exc()
        finally:
            if view is not None:
                view.close()
            r.stop_all()
        if r.driver is not None:
            wall = getattr(r, "t_stop", time.monotonic()) - t_start
            r.settle_learners()
            r.checkpoint("final", final=True)
            summary = r.accounting.summary(r, wall)
            if writer is not None:
                writer.close()
            (r.run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
            if cfg.plots:
                from rtcore.agent.report import draw

                draw(r.run_dir)
    finally:
        if writer is not None:
            writer.close()
        r.close_shared()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if summary is None:
        if r.stopped_by == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError(f"the run stopped ({r.stopped_by}) before the environment started")
    return summary


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    add_config_arguments(parser)


def check_options(cfg: RunConfig) -> None:
    """What :func:`run` would find wrong with ``cfg``'s names before it starts anything, found without
    building anything: the env id, the ROM file, the model spec, a CUDA device on a machine without one
    (``ValueError`` / ``FileNotFoundError`` naming the option)."""
    from rtcore.envs import check_env_id
    from rtcore.models import parse_model_spec

    check_env_id(cfg.env, cfg.rom)
    if not cfg.env.startswith(("ALE/", "gb/", "rtcore/", "minatar/")):
        # a Gymnasium id or a user's factory: only the env itself says whether it has a default action
        # and a frame time, so build it once (rtcore's own envs always have both)
        env = _make_env(cfg.env, _env_kwargs(cfg))  # ValueError without a default action
        try:
            if cfg.frequency is None and getattr(env, "frame_time", None) is None:
                raise ValueError(f"env {cfg.env!r} has no frame_time (its native seconds per step): give the step "
                                 f"frequency with --frequency HZ")
        finally:
            env.close()
    parse_model_spec(cfg.model)
    if cfg.resume:
        check_resumable(cfg)
    if any(d and d.startswith("cuda") for d in (cfg.device, cfg.learner_device)):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device = {cfg.device!r}, learner_device = {cfg.learner_device!r}: "
                             "CUDA requested but torch.cuda.is_available() is False")


def main(args: argparse.Namespace) -> int:
    """``rtcore run``: a bad option exits 2 with one line; a failure of the run itself raises."""
    try:
        cfg = config_from_args(args)
        check_options(cfg)
    except OPTION_ERRORS as exc:
        return bad_option("rtcore run", exc)
    summary = run(cfg)
    if cfg.json:
        print(json.dumps(summary.to_dict()))
    elif not cfg.quiet:
        print_summary(summary)
    return {"time": 0, "interrupt": 130, "sigterm": 143}.get(summary.stopped_by, 1)  # 1: a fault ended it
