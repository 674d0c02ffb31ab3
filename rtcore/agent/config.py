"""The configuration of a run: one dataclass, one docstring per field, and the CLI generated from it.

``RunConfig`` is the single source of truth for ``rtcore run``: every field becomes a command-line
option (``batch_size`` -> ``--batch-size``; booleans get ``--flag / --no-flag``), its docstring becomes
the option's help, and its default the option's default. In Python:

    >>> import rtcore
    >>> summary = rtcore.run(rtcore.RunConfig(env="ALE/Boxing-v5", model="impala:k=7", seconds=600))

``RunConfig.validate()`` checks every field and raises a ``ValueError`` naming the field, the value and
what was expected; ``rtcore.run`` calls it first.

Length: one documented field per option of ``rtcore run`` and the check of each; splitting them would
split the one place a user reads to learn the options.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import re
import time
import textwrap
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

__all__ = ["read_delay_schedule", "RunConfig", "add_config_arguments", "config_from_args", "field_docs", "epsilon_at",
           "make_run_dir"]

MODES = ("staggered", "sequential")
BACKENDS = ("script", "export", "eager", "frozen")  # how workers run the model (frozen: rtcore.models.frozen)
PARAM_SPARE_READERS = 8
AGENTS = ("dqn", "rainbow")
LEARN_ON = ("applied", "acted")
STAGGER_MODES = ("max", "mean")
SEQUENTIAL_ORDERS = ("inflearn", "learninf")
DEFAULT_ACTIONS = ("noop", "random")
WORKERS_ON = ("env", "gpu")
PLACEMENTS = ("spread", "strict-spread", "pack")


@dataclass
class RunConfig:
    """Everything a run needs. Defaults give the README's first command: a one-minute realtime Pong on CPU."""

    # --- what to play, with what
    env: str = "ALE/Pong-v5"
    """Environment id for ``rtcore.make``: any ``ALE/...`` id, ``gb/Tetris``, ``gb/PokemonRed``, ``gb/PokemonBlue``, ``rtcore/Catch``, ``minatar/<Game>`` (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders), any registered Gymnasium id, or ``package.module:factory`` (a callable returning a ``gymnasium.Env``)."""
    rom: Optional[str] = None
    """Game Boy ROM file (needed by the ``gb/...`` environments; ignored by Atari)."""
    frequency: Optional[float] = None
    """Environment steps per second of wall clock (default: the env's native rate ``1 / frame_time``: 60 Hz for Atari, 100 Hz for MinAtar, 400 Hz for Catch; required for an env without ``frame_time``)."""
    model: str = "nature"
    """Q-network spec (``rtcore.models.parse_model_spec``): ``nature``, ``impala:k=1``, ``impala:k=7,deep=1``, ``minatar``, ``mlp:hidden=256,layers=2``, ``...,dueling=1``. Default ``nature`` (was ``impala:k=1``): on a 2-core CPU its gradient (batch 32, 84x84x4) took 0.27 s against 5.1 s for ``impala:k=1`` (same load), so the default minute of Pong learns from ~20x more updates; the paper's Impala family is one option away."""
    frame_stack: int = 4
    """Observations per model input (frames of any size, or vectors), stacked by the boards and the replay buffer, not by copies."""
    device: str = "cpu"
    """Device of the inference workers: ``cpu`` or ``cuda`` (several workers share one GPU)."""
    learner_device: Optional[str] = None
    """Device of the learners (default: same as ``device``)."""
    backend: str = "script"
    """How workers run the model: ``script`` (TorchScript), ``export`` (torch.export), ``eager``, or ``frozen`` (CPU only: frozen, oneDNN-optimized TorchScript whose constants a thread in each worker refreshes in place to each new parameter version while the worker acts on the other of two copies; faster passes, for two private copies of the parameters per worker and a version lag of one refresh plus at most a turn; not for noisy nets; see rtcore.models.frozen)."""

    # --- acting
    mode: str = "staggered"
    """``staggered``: N asynchronous inference workers + M learners (the paper's method); ``sequential``: one process alternating act and learn while the env keeps running (the paper's inflearn/learninf baseline)."""
    sequential_order: str = "inflearn"
    """Sequential mode only: ``inflearn`` (act, then learn) or ``learninf`` (learn, then act)."""
    workers: str = "auto"
    """Inference workers N: a number, or ``auto`` for N* = ceil(tau_theta_max / tau_M) from the measured inference time."""
    worker_headroom: float = 1.5
    """``--workers auto`` starts ceil(headroom * tau_theta_max / tau_M) workers, and at least 2 when headroom > 1: spare capacity, so a pass slower than measured (a busy machine) opens no gaps. 1.0 = exactly N* = ceil(tau_theta_max / tau_M)."""
    max_workers: int = 64
    """Upper bound on N when ``--workers auto`` (N* of a big model on a slow machine can exceed what fits); with ``--elastic`` the runner grows N up to it."""
    elastic: bool = False
    """Elastic N, with ``--workers auto``: when the measured tau_theta_max grows past N * tau_M (a busy machine, a bigger batch), spawn workers (up to ``--max-workers``) and re-stagger; retire spare ones after ``--elastic-quiet`` seconds with fewer needed."""
    elastic_quiet: float = 10.0
    """Seconds tau_theta_max must stay low enough for fewer workers (with headroom) before elastic N retires one."""
    stagger: str = "max"
    """Staggering rule: ``max`` (the paper's Algorithm 1, spacing by the running maximum inference time) or ``mean`` (Algorithm 2)."""
    pushback: str = "lattice"
    """How ``max`` staggering re-spaces the workers after a pass slower than tau_max: ``lattice`` (every worker moves onto an even grid at the new tau_max / N within one cycle) or ``paper`` (Algorithm 1's ``delay[j] += dist(j, i) * (t - tau_max) / N``, which leaves the spacing uneven after an overshoot; see docs/design/stagger.md) or ``authors`` (``paper`` as the authors' code runs it: a push-back arriving while a worker sleeps an earlier one is lost). ``mean`` staggering has no push-back (a publish queue)."""
    default_action: str = "noop"
    """What the env applies on a step with no fresh action (inaction): ``noop`` (the env's own ``default_action``, e.g. Atari's NOOP), an action index ``N`` (required for an env without a default action, e.g. a Gymnasium id; it also replaces the env's own), or ``random`` (a uniformly random action, seeded: the authors' ``--random_not_noop``)."""
    tau_window: int = 256
    """Forget inference times older than the last ``tau_window`` passes (all workers) when computing tau_max, so one stall (a busy machine, a GC pause) does not widen the action spacing for the rest of the run. 0 = the paper's all-time running maximum. At most 1024."""
    realtime: bool = False
    """SCHED_FIFO and 1 ns timer slack for the env driver (priority 10) and the inference workers (priority 5) when the OS allows it (CAP_SYS_NICE); refusals are reported, not fatal. Learners stay ordinary."""
    inference_delay: float = 0.0
    """Seconds added to every forward pass, to EMULATE a larger model's latency on small hardware (reported in the metrics; 0 = none)."""
    inference_delay_schedule: Optional[str] = None
    """File of ``SECONDS DELAY`` lines: at each run time (seconds since the env's first frame) the emulated delay becomes DELAY, in every worker at its next pass (e.g. a latency that doubles mid-run)."""
    tau_theta: Optional[float] = None
    """Inference time tau_theta_max in seconds used to size N and seed the schedule (default: measured p99 + inference_delay)."""
    latency_iters: int = 50
    """Forward passes timed to measure tau_theta before the run starts."""
    epsilon_start: float = 1.0
    """Exploration rate at env step 0 (epsilon-greedy)."""
    epsilon_end: float = 0.05
    """Exploration rate after ``epsilon_decay_steps`` env steps (linear decay, as in the paper)."""
    epsilon_decay_steps: int = 10_000
    """Env steps over which epsilon falls linearly from ``epsilon_start`` to ``epsilon_end``. 10k (was 100k, the Atari figure for millions of steps): a realtime run of minutes is 5k-30k steps (100 s at 100 Hz, 3 min at 60 Hz), and with 100k it ended still acting at random (epsilon > 0.9 for the whole default minute of Pong)."""

    # --- learning
    param_buffers: int = 0
    """Parameter versions the shared ParamStore keeps (memory: this many copies of the model). Readers of the same version share one; a publish finding every spare one pinned is skipped and the next carries its update. 0 = auto (8, or readers + 2 if fewer)."""
    learners: int = 1
    """Learner processes M (round-robin asynchronous updates; 0 = act only, no learning)."""
    replay_capacity: int = 100_000
    """Transitions kept in the shared replay buffer."""
    learning_starts: int = 1_000
    """Transitions in the replay buffer before learners start updating (1k: 10 s at 100 Hz, 2.5 s of Catch; enough to decorrelate the first batches, short against a run of minutes)."""
    batch_size: int = 32
    """Transitions per gradient step."""
    lr: float = 1e-4
    """Adam learning rate."""
    adam_eps: float = 1.5e-4
    """Adam epsilon."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 3
    """n-step return length of the DQN targets (computed by the replay buffer)."""
    learn_on: str = "acted"
    """Which observation a stored transition learns from: ``acted`` (the stack the worker computed the action from, ``delay`` steps before the step it was applied at; bootstraps from the stack ``delay`` steps before the n-th next one, as a delayed-observation env would give) or ``applied`` (the stack at the step the action was applied). Both read the frames already in the replay ring (no copy). Default ``acted``, measured with bench/learning.py (median final return of 3 seeds): Catch at a delay of ~3.5 steps 0.84 acted vs 0.64 applied; at 8 steps Catch -1.84 vs -1.66 and MinAtar Breakout 0.33 vs 0.31 (both near random play in a minute). No difference stands out of the seed-to-seed spread; ``acted`` is the default because it is the problem the agent actually faces (the Q-function is trained on what the worker sees when it acts, as with ``DelayWrapper``)."""
    action_history: int = 0
    """Delay-aware observations (0 = off): feed the model, beside the frames, the last K actions applied before the newest frame and the action already posted but not yet applied when it was read (one-hot, ``none`` where there is none: before the episode start, no pending post), as rtgym does. Carried through the boards (workers read it with the frames, at act time), the replay buffer (gathered again at sample time, by the same definition, for both ``learn_on`` conventions) and the model (``forward(obs, hist)``). Checkpoints record it; resuming or playing with another K is refused. An integer in [0, 64]."""
    target_update: int = 500
    """Hard-update the target network every this many applied updates (all learners together). 500 (was 2000): a CPU learner applies 10-100 updates/s, so 2000 left the first target in place for most of a run of minutes; Catch learns with 50, MinAtar with 500."""
    double_dqn: bool = True
    """Double DQN targets (online network picks the next action, target network values it)."""
    agent: str = "dqn"
    """``dqn``: the flags below as given; ``rainbow``: also turns on ``dueling``, ``noisy``, ``distributional``, ``double_dqn`` and ``prioritized`` (with the defaults, the authors' Rainbow in CERC-AAI/realtime_rl: 51 atoms on [0, 200], 3-step returns, alpha 0.2, constant beta 0.6, priority eps 1e-6, gradient norm clip 10; epsilon-greedy stays on, as their ``act()`` keeps it)."""
    dueling: bool = False
    """Dueling head (value and advantage streams); same as ``dueling=1`` in the model spec."""
    noisy: bool = False
    """Noisy linear layers in the head (factorised Gaussian, sigma0 = 0.5); learners draw new noise every update, workers on every new parameter version."""
    distributional: bool = False
    """C51 distributional head over ``atoms`` returns in [``v_min``, ``v_max``] with the categorical (cross-entropy) loss."""
    atoms: int = 51
    """Atoms of the distributional head (the authors: 51)."""
    v_min: float = 0.0
    """Lowest return of the distributional support (the authors: 0)."""
    v_max: float = 200.0
    """Highest return of the distributional support (the authors: 200)."""
    prioritized: bool = False
    """Prioritized replay (proportional, lock-free sum tree in the shared buffer): priorities |TD error| (or the C51 loss) + ``priority_eps``, importance-weighted loss."""
    priority_alpha: float = 0.2
    """Priority exponent alpha in [0, 1] (the authors: 0.2)."""
    priority_beta: float = 0.6
    """Importance-sampling exponent beta in [0, 1] at the first update (the authors: 0.6)."""
    priority_beta_steps: int = 0
    """Anneal beta linearly from ``priority_beta`` to 1 over this many applied updates; 0 = constant (the authors' realtime learner never anneals)."""
    priority_eps: float = 1e-6
    """Added to every new priority, so no transition is starved (the authors: 1e-6)."""
    max_grad_norm: float = 10.0
    """Clip each gradient to this global L2 norm (0 = no clipping)."""
    updates_per_step: float = 1.0
    """Cap on learner updates per env step, all learners together (0 = as fast as the learners go). 1.0 (was 0): the replay ratio of the MinAtar DQN; uncapped, fast learners on a small game ran many updates per new transition and fitted the first few hundred over and over. Slow learners (Pong's Impala on a CPU, ~1-10 updates/s at 60 Hz) never reach the cap."""
    learner_threads: int = 1
    """torch CPU threads per learner process."""
    learner_nice: int = 10
    """Niceness added to learner processes, so the env and the inference workers get the CPU first when cores run short (0 = same priority)."""

    # --- the run
    seconds: float = 60.0
    """Wall-clock length of the run in seconds."""
    seed: int = 0
    """Seed of the env, the exploration and the network initialisation."""
    run_dir: Optional[str] = None
    """Run directory (default: ``<runs-root>/<env>-<timestamp>``): config, metrics, checkpoints, plots."""
    runs_root: str = "runs"
    """Parent directory of default run directories."""
    resume: Optional[str] = None
    """Continue the run in this run directory from its newest checkpoint (learner state, env step count, epsilon); metrics are appended there. Options given with it override the run's saved config."""
    metrics_interval: float = 1.0
    """Seconds between rows of the metrics (CSV, TensorBoard) and refreshes of the live view."""
    checkpoint_interval: float = 300.0
    """Seconds between checkpoints (the network, and the whole learner state for ``--resume``; one is always written at the end; 0 = only at the end)."""
    heartbeat_timeout: float = 1.0
    """A worker silent this long (seconds) is dropped from the schedule and the others re-staggered."""
    respawn: bool = True
    """Respawn a dead inference worker or learner (a dead env always ends the run)."""
    tensorboard: bool = True
    """Also write TensorBoard event files when ``tensorboard`` is installed."""
    plots: bool = True
    """Draw the plots into the run directory at the end (``rtcore report RUN_DIR`` redraws them)."""
    quiet: bool = False
    """No live view and no summary table (the live view is also off when stdout is not a terminal)."""
    json: bool = False
    """Print one JSON object with the run's summary at the end (and nothing else on stdout)."""

    # --- the cluster
    cluster: Optional[str] = None
    """Spread the run over a Ray cluster (``pip install "rtcore[ray]"``, see rtcore.cluster): ``ray`` starts a local Ray instance on 127.0.0.1 (one node; for trying it out), ``ray:HOST:PORT`` connects to a running cluster (``ray start --head``). None: one machine, shared memory only."""
    env_nodes: int = 1
    """With ``--cluster``: game instances, each an env-node actor with its own env driver, boards, replay shard, stagger schedule and (by default) inference workers."""
    workers_on: str = "env"
    """With ``--cluster``: where the inference workers run: ``env`` (worker processes on each env node, in its shared memory) or ``gpu`` (remote worker actors, each with ``--worker-gpus`` of a GPU, placed by Ray; observations go to them and actions come back over the network, and that time counts as inference time and delay; with ``--worker-gpus 0`` they are remote CPU actors)."""
    worker_gpus: float = 0.0
    """With ``--cluster``: GPUs per inference worker (``0.25``: four workers share a GPU); workers on a GPU run on ``cuda``."""
    learner_gpus: float = 0.0
    """With ``--cluster``: GPUs per learner; > 0 puts the learners on GPU nodes and runs them on ``cuda``."""
    cluster_placement: str = "spread"
    """With ``--cluster``: Ray placement strategy of the run's bundles (one per env node, one for the learner group): ``spread`` (different nodes where possible), ``strict-spread`` (each on its own node, or the run does not start) or ``pack``."""
    env_node_cpus: int = 0
    """With ``--cluster``: CPUs each env node's bundle reserves (env driver + local workers); 0 = 1 + workers (2 with ``--workers auto``, 1 with ``--workers-on gpu``)."""
    param_interval: float = 0.05
    """With ``--cluster``: the learner group puts a new parameter version into Ray's object store at most this often (seconds); each env node copies the newest one into its local ParamStore."""
    batch_prefetch: int = 2
    """With ``--cluster``: replay batches each learner keeps in flight per env-node shard (sampled next to the shard, moved through Ray's object store while the learner computes)."""

    # ------------------------------------------------------------------ validation
    def validate(self) -> "RunConfig":
        """Checks every field; raises ``ValueError`` naming the field, its value and what was expected."""

        def bad(name: str, expected: str) -> None:
            raise ValueError(f"{name} = {getattr(self, name)!r}: expected {expected}")

        if not isinstance(self.env, str) or not self.env:
            bad("env", "an environment id such as 'ALE/Pong-v5'")
        if self.frequency is not None and not (self.frequency > 0 and math.isfinite(self.frequency)):
            bad("frequency", "a positive number of steps per second, or None for the native rate")
        if self.learn_on not in LEARN_ON:
            bad("learn_on", " or ".join(repr(m) for m in LEARN_ON))
        if not isinstance(self.frame_stack, int) or not 1 <= self.frame_stack <= 16:
            bad("frame_stack", "an integer in [1, 16]")
        if (not isinstance(self.action_history, int) or isinstance(self.action_history, bool)
                or not 0 <= self.action_history <= 64):
            bad("action_history", "an integer in [0, 64] (actions fed to the model beside the frames; 0 = off)")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            bad("device", "'cpu' or 'cuda[:index]'")
        if self.learner_device is not None and not all(d.strip() == "cpu" or d.strip().startswith("cuda")
                                                       for d in self.learner_device.split(",")):
            bad("learner_device", "'cpu', 'cuda[:index]', a comma-separated list of GPUs ('cuda:0,cuda:1') or None")
        if self.backend not in BACKENDS:
            bad("backend", "'script', 'export', 'eager' or 'frozen'")
        if self.backend == "frozen" and self.device != "cpu":
            bad("backend", f"'script', 'export' or 'eager' with device = {self.device!r}: 'frozen' runs CPU "
                f"workers only (torch's optimize_for_inference applies oneDNN on the CPU)")
        if self.mode not in MODES:
            bad("mode", " or ".join(repr(m) for m in MODES))
        if self.sequential_order not in SEQUENTIAL_ORDERS:
            bad("sequential_order", " or ".join(repr(m) for m in SEQUENTIAL_ORDERS))
        if self.stagger not in STAGGER_MODES:
            bad("stagger", " or ".join(repr(m) for m in STAGGER_MODES))
        if isinstance(self.default_action, int) and not isinstance(self.default_action, bool) and self.default_action >= 0:
            self.default_action = str(self.default_action)
        if not isinstance(self.default_action, str) or not (self.default_action in DEFAULT_ACTIONS
                                                           or self.default_action.isdigit()):
            bad("default_action", " or ".join(repr(m) for m in DEFAULT_ACTIONS) + " or an action index N >= 0")
        from rtcore.shared.sched import PUSHBACKS, TAU_WINDOW_MAX

        if self.pushback not in PUSHBACKS:
            bad("pushback", " or ".join(repr(m) for m in PUSHBACKS))
        if not isinstance(self.tau_window, int) or not 0 <= self.tau_window <= TAU_WINDOW_MAX:
            bad("tau_window", f"an integer in [0, {TAU_WINDOW_MAX}]")
        w = str(self.workers).strip().lower()
        if w != "auto":
            try:
                n = int(w)
            except ValueError:
                n = 0
            if n < 1:
                bad("workers", "a positive integer or 'auto'")
        if not (1.0 <= self.worker_headroom <= 16.0):
            bad("worker_headroom", "a factor in [1, 16]")
        if not isinstance(self.max_workers, int) or self.max_workers < 1:
            bad("max_workers", "a positive integer")
        if not (self.inference_delay >= 0 and math.isfinite(self.inference_delay)):
            bad("inference_delay", "seconds >= 0")
        if self.inference_delay_schedule is not None:
            read_delay_schedule(self.inference_delay_schedule)  # raises ValueError naming a bad line
        if self.tau_theta is not None and not (self.tau_theta > 0 and math.isfinite(self.tau_theta)):
            bad("tau_theta", "positive seconds, or None to measure it")
        if self.latency_iters < 1:
            bad("latency_iters", "a positive integer")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "a probability in [0, 1]")
        if self.epsilon_decay_steps < 0:
            bad("epsilon_decay_steps", "a number of steps >= 0")
        if not isinstance(self.learners, int) or self.learners < 0:
            bad("learners", "an integer >= 0")
        from rtcore.shared.params import MAX_BUFFERS, MAX_READERS

        if not isinstance(self.param_buffers, int) or not (self.param_buffers == 0 or 2 <= self.param_buffers <= MAX_BUFFERS):
            bad("param_buffers", f"0 (auto) or an integer in [2, {MAX_BUFFERS}]")
        n_max = self.fixed_workers if w != "auto" else self.max_workers
        readers = self.param_readers(n_max, self.learners)
        if readers > MAX_READERS:
            raise ValueError(f"workers ({n_max}{' = max_workers' if w == 'auto' else ''}) + learners ({self.learners}) "
                             f"+ {PARAM_SPARE_READERS} spare = {readers} parameter readers: more than the ParamStore's "
                             f"limit of {MAX_READERS} reader slots; use fewer workers or learners")
        if not self.elastic_quiet > 0:
            bad("elastic_quiet", "positive seconds")
        if self.replay_capacity < max(2, self.batch_size):
            bad("replay_capacity", f"at least batch_size ({self.batch_size}) and 2")
        if self.learning_starts < self.batch_size:
            bad("learning_starts", f"at least batch_size ({self.batch_size})")
        if self.learning_starts > self.replay_capacity:
            bad("learning_starts", f"at most replay_capacity ({self.replay_capacity})")
        if self.batch_size < 1:
            bad("batch_size", "a positive integer")
        if not self.lr > 0:
            bad("lr", "a positive learning rate")
        if not self.adam_eps > 0:
            bad("adam_eps", "a positive number")
        if not 0.0 <= self.gamma <= 1.0:
            bad("gamma", "a discount in [0, 1]")
        if not 1 <= self.n_step <= 64:
            bad("n_step", "an integer in [1, 64]")
        if self.target_update < 1:
            bad("target_update", "a positive number of updates")
        if self.max_grad_norm < 0:
            bad("max_grad_norm", "a norm >= 0 (0 disables clipping)")
        if self.updates_per_step < 0:
            bad("updates_per_step", "a ratio >= 0 (0 = unlimited)")
        if self.learner_threads < 1:
            bad("learner_threads", "a positive integer")
        if not 0 <= self.learner_nice <= 19:
            bad("learner_nice", "an integer in [0, 19]")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            bad("seconds", "a positive duration")
        if not self.metrics_interval > 0:
            bad("metrics_interval", "positive seconds")
        if self.resume is not None and not (Path(self.resume) / "config.json").is_file():
            bad("resume", "an rtcore run directory (with config.json and checkpoints/)")
        if self.checkpoint_interval < 0:
            bad("checkpoint_interval", "seconds >= 0 (0 = only at the end)")
        if not self.heartbeat_timeout > 0:
            bad("heartbeat_timeout", "positive seconds")
        if self.agent not in AGENTS:
            bad("agent", " or ".join(repr(a) for a in AGENTS))
        if not isinstance(self.atoms, int) or self.atoms < 2:
            bad("atoms", "an integer >= 2")
        if not (math.isfinite(self.v_min) and math.isfinite(self.v_max) and self.v_min < self.v_max):
            bad("v_max", f"a finite number above v_min ({self.v_min})")
        for name in ("priority_alpha", "priority_beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "a number in [0, 1]")
        if not isinstance(self.priority_beta_steps, int) or self.priority_beta_steps < 0:
            bad("priority_beta_steps", "an integer >= 0 (0 = constant beta)")
        if not (self.priority_eps > 0 and math.isfinite(self.priority_eps)):
            bad("priority_eps", "a positive number")
        from rtcore.models import parse_model_spec

        try:
            parse_model_spec(self.model_spec())
        except ValueError as e:
            raise ValueError(f"model = {self.model!r}: {e}") from None
        if self.backend == "frozen" and parse_model_spec(self.model_spec()).noisy:
            raise ValueError(f"backend = 'frozen' with a noisy model ({self.model_spec()}): a frozen graph folds "
                             f"mu + sigma * eps into constants, which cannot follow new versions or new noise in "
                             f"place; use backend 'script'")
        self._validate_cluster(bad)
        if self.mode == "sequential" and w not in ("auto", "1"):
            bad("workers", "1 or 'auto' in sequential mode (one process acts and learns)")
        return self

    def _validate_cluster(self, bad: Any) -> None:
        """The ``--cluster`` options: only with a cluster, and a clear error when Ray is missing."""
        c = self.cluster
        if c is not None:
            if not isinstance(c, str) or not (c == "ray" or (c.startswith("ray:") and len(c) > 4)):
                bad("cluster", "'ray' (a local Ray instance on 127.0.0.1) or 'ray:HOST:PORT' (a running cluster)")
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ValueError(f"cluster = {c!r}: Ray is not installed; install it with pip install \"rtcore[ray]\"")
            if self.mode != "staggered":
                bad("mode", "'staggered' with --cluster (the sequential baseline runs on one machine)")
            if self.resume is not None:
                bad("resume", "None with --cluster (a cluster run does not resume; it writes its final parameters)")
            if self.workers_on == "gpu" and self.elastic:
                bad("elastic", "off with --workers-on gpu (elastic N grows local worker processes)")
            if self.workers_on == "gpu" and self.backend == "frozen":
                bad("backend", "'script', 'export' or 'eager' with --workers-on gpu (remote workers follow versions "
                    "through Ray; 'frozen' is for worker processes on the env nodes)")
            if self.workers_on == "gpu" and str(self.workers).strip().lower() == "auto":
                bad("workers", "a number with --workers-on gpu (auto sizes N from the forward pass measured on the "
                               "env node, which leaves out the network round trip)")
            if self.learner_gpus > 0 and self.learner_device not in (None, "cuda"):
                bad("learner_device", "None or 'cuda' with --learner-gpus > 0 (Ray picks the GPU)")
            if self.learner_gpus > 0 and self.learners * self.learner_gpus > 0.99:
                raise ValueError(f"learner_gpus = {self.learner_gpus!r} x learners = {self.learners}: the learners of a "
                                 f"cluster run share one GPU with their group's state (0.01 of it); expected "
                                 f"learners x learner_gpus <= 0.99")
            if self.worker_gpus > 0 and self.device not in ("cpu", "cuda"):
                bad("device", "'cpu' or 'cuda' with --worker-gpus > 0 (Ray picks the GPU)")
        for name, default in (("env_nodes", 1), ("workers_on", "env"), ("worker_gpus", 0.0), ("learner_gpus", 0.0),
                              ("cluster_placement", "spread"), ("env_node_cpus", 0)):
            if c is None and getattr(self, name) != default:
                bad(name, f"{default!r} without --cluster (it places roles on the nodes of a Ray cluster)")
        if not isinstance(self.env_nodes, int) or not 1 <= self.env_nodes <= 256:
            bad("env_nodes", "an integer in [1, 256]")
        if self.workers_on not in WORKERS_ON:
            bad("workers_on", " or ".join(repr(m) for m in WORKERS_ON))
        for name in ("worker_gpus", "learner_gpus"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 8):
                bad(name, "a number of GPUs in [0, 8] (a fraction shares one GPU)")
        if self.cluster_placement not in PLACEMENTS:
            bad("cluster_placement", " or ".join(repr(m) for m in PLACEMENTS))
        if not isinstance(self.env_node_cpus, int) or not 0 <= self.env_node_cpus <= 1024:
            bad("env_node_cpus", "an integer in [0, 1024] (0 = auto)")
        if not (math.isfinite(self.param_interval) and 0.001 <= self.param_interval <= 60):
            bad("param_interval", "seconds in [0.001, 60]")
        if not isinstance(self.batch_prefetch, int) or not 1 <= self.batch_prefetch <= 16:
            bad("batch_prefetch", "an integer in [1, 16]")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def param_readers(workers: int, learners: int) -> int:
        """Reader slots of the run's ParamStore: every worker, every learner, and spares (the runner's
        checkpoint, respawned processes whose dead predecessor's slot is not reclaimed yet)."""
        return int(workers) + int(learners) + PARAM_SPARE_READERS

    @property
    def fixed_workers(self) -> int | None:
        """N when given as a number, None for ``auto``."""
        w = str(self.workers).strip().lower()
        return None if w == "auto" else int(w)

    def resolved(self) -> "RunConfig":
        """A copy with ``agent`` applied: ``rainbow`` turns on every Rainbow flag (the numbers stay as set)."""
        if self.agent != "rainbow":
            return dataclasses.replace(self)
        return dataclasses.replace(self, dueling=True, noisy=True, distributional=True, double_dqn=True,
                                   prioritized=True)

    def model_spec(self) -> str:
        """The model spec the run builds: ``model`` with the ``dueling``, ``noisy`` and ``distributional``
        flags (and ``agent``) applied."""
        import dataclasses as dc

        from rtcore.models import parse_model_spec

        c = self.resolved()
        s = parse_model_spec(c.model)
        if c.dueling:
            s = dc.replace(s, dueling=True)
        if c.noisy:
            s = dc.replace(s, noisy=True)
        if c.distributional:
            s = dc.replace(s, atoms=c.atoms, v_min=float(c.v_min), v_max=float(c.v_max))
        return str(s)

    @classmethod
    def resumed(cls, run_dir: str, **overrides: Any) -> "RunConfig":
        """The config saved in ``run_dir/config.json``, with ``overrides``, set to resume that run."""
        import json

        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume {run_dir}: no config.json there (is it an rtcore run directory?)")
        saved = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig fields: {unknown}")
        values = {k: v for k, v in saved.items() if k in known}
        values.update(overrides)
        values.update(run_dir=str(run_dir), resume=str(run_dir))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuilds a config from ``to_dict()`` output (``config.json``); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; expected a subset of {sorted(names)}")
        return cls(**d)


def read_delay_schedule(path: str | None) -> list[tuple[float, float]]:
    """``--inference-delay-schedule``: lines ``SECONDS DELAY`` (run time since the env's first frame, emulated
    latency in seconds; ``#`` comments), sorted by time. ValueError names a bad line."""
    if not path:
        return []
    steps = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#")[0].strip()
        if not text:
            continue
        try:
            t, d = (float(x) for x in text.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"inference_delay_schedule {path}:{i}: {line!r}: expected 'SECONDS DELAY'") from None
        if not (t >= 0 and d >= 0 and math.isfinite(t) and math.isfinite(d)):
            raise ValueError(f"inference_delay_schedule {path}:{i}: {line!r}: expected seconds >= 0 and a delay >= 0")
        steps.append((t, d))
    return sorted(steps)


def epsilon_at(step: int, start: float, end: float, decay_steps: int) -> float:
    """Linear epsilon schedule: ``start`` at step 0, ``end`` from ``decay_steps`` on."""
    if decay_steps <= 0 or step >= decay_steps:
        return end
    return start + (end - start) * (step / decay_steps)


# ---------------------------------------------------------------------- docstrings -> CLI
def field_docs(cls: type = RunConfig) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal after each field), by field name."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen app): fields still work, without help
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    stmts = body.body
    for prev, node in zip(stmts, stmts[1:]):
        if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def field_sections(cls: type = RunConfig) -> dict[str, str]:
    """The ``# --- section`` comment each field of ``cls`` sits under, by field name (for --help groups)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in fields(cls)}
    section, out = "", {}
    for line in lines:
        text = line.strip()
        if text.startswith("# ---"):
            section = text[5:].strip()
        elif ":" in text and text.split(":")[0] in names and section:
            out.setdefault(text.split(":")[0], section)
    return out


def _base_type(tp: Any) -> tuple[type, bool]:
    """(underlying type, optional?) of a field annotation."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    if origin is Literal:
        return str, False
    return tp, False


def _optional(convert):
    def parse(text: str):
        if text.strip().lower() in ("none", "null", ""):
            return None
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = RunConfig) -> None:
    """Adds one option per field of ``cls`` to ``parser`` (help from the field's docstring)."""
    docs = field_docs(cls)
    sections = field_sections(cls)
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    defaults = cls()
    from rtcore.shared.sched import PUSHBACKS

    choices = {"mode": MODES, "learn_on": LEARN_ON, "stagger": STAGGER_MODES, "pushback": PUSHBACKS,
               "sequential_order": SEQUENTIAL_ORDERS, "workers_on": WORKERS_ON, "cluster_placement": PLACEMENTS,
               "backend": BACKENDS}
    for f in fields(cls):
        tp, optional = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = docs.get(f.name, "").replace("%", "%%")
        section = sections.get(f.name, "")
        if section and section not in groups:
            groups[section] = parser.add_argument_group(section)
        target = groups.get(section, parser)
        if tp is bool:
            target.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
            continue
        convert = {int: int, float: float, str: str}.get(tp)
        if convert is None:
            raise TypeError(f"RunConfig.{f.name}: unsupported field type {tp!r}")
        if optional:
            convert = _optional(convert)
        metavar = {"int": "N", "float": "X", "str": "TEXT"}[tp.__name__]
        if f.name in ("seconds", "inference_delay", "tau_theta", "metrics_interval", "checkpoint_interval",
                      "heartbeat_timeout"):
            metavar = "S"
        elif f.name in ("run_dir", "runs_root", "rom", "resume", "inference_delay_schedule"):
            metavar = "PATH"
        elif f.name == "workers":
            metavar = "N|auto"
        elif f.name == "frequency":
            metavar = "HZ"
        elif f.name == "cluster":
            metavar = "ray[:ADDRESS]"
        target.add_argument(flag, dest=f.name, type=convert, default=default, choices=choices.get(f.name),
                            metavar=None if f.name in choices else metavar,
                            help=f"{help_text} (default: {default})")


def config_from_args(args: argparse.Namespace, cls: type = RunConfig) -> RunConfig:
    """The ``RunConfig`` an ``argparse`` namespace from :func:`add_config_arguments` describes (validated).

    With ``--resume RUN_DIR``: the run's saved config, overridden by the options that were given (those
    whose value differs from the default)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)}
    if values.get("resume"):
        defaults = cls()
        given = {k: v for k, v in values.items() if k not in ("resume", "run_dir") and v != getattr(defaults, k)}
        return cls.resumed(values["resume"], **given).validate()
    return cls(**values).validate()


def _env_slug(env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", env_id.split("/")[-1]).strip("-") or "env"


def make_run_dir(cfg: RunConfig) -> Path:
    """``cfg.run_dir``, or a new ``<runs_root>/<env>-<timestamp>`` folder."""
    if cfg.run_dir:
        path = Path(cfg.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.runs_root) / f"{_env_slug(cfg.env)}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    path.mkdir(parents=True)
    return path
