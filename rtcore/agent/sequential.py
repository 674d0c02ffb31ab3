"""The paper's sequential baseline (``inflearn`` / ``learninf``): one process acts and learns in turn
while the environment keeps running, so every forward pass and every update is inaction."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

from rtcore.agent._proc import WORKER_RT_PRIORITY, apply_realtime, child_setup, quiet_gc
from rtcore.agent.dqn import DQNLearner
from rtcore.agent.inference import Actor
from rtcore.agent.learner import LearnerSpec, state_arrays
from rtcore.agent.telemetry import LearnerCol, WorkerCol

__all__ = ["SequentialSpec", "sequential_main"]


@dataclass
class SequentialSpec:
    """The sequential agent: one process, one actor and one learner (``order``: inflearn or learninf)."""

    order: str
    actor: Any          # rtcore.agent.inference.ActorConfig
    learner: LearnerSpec
    action_board: Any
    frame_stack: int
    obs_shape: tuple[int, ...]
    realtime: bool = False
    obs_dtype: str = "uint8"


def sequential_main(spec: SequentialSpec) -> None:
    """Entry point of the sequential baseline: act, learn, act, learn, ... while the env keeps running."""
    ls = spec.learner
    child_setup(ls.threads)
    if spec.realtime:
        apply_realtime(WORKER_RT_PRIORITY, "sequential agent")
    import torch

    from rtcore.models import build_model

    torch.manual_seed(ls.seed)
    tel = ls.telemetry
    wrow = tel.workers[0]
    lrow = tel.learners[0]
    for r, col_pid, col_beat in ((wrow, WorkerCol.PID, WorkerCol.HEARTBEAT), (lrow, LearnerCol.PID, LearnerCol.HEARTBEAT)):
        r[col_pid] = os.getpid()
        r[col_beat] = time.monotonic()
    mirror = None
    if ls.mirrors:
        dev = torch.device(spec.actor.device if spec.actor.device != "cuda" else "cuda:0")
        mirror = next((m for m in ls.mirrors if m.device == dev), None)
    actor = Actor(spec.actor, ls.obs_board, ls.params, spec.frame_stack, spec.obs_shape, spec.obs_dtype, mirror=mirror,
                  control=tel.control, action_board=spec.action_board)
    actor.warmup()
    learner = DQNLearner(build_model(ls.model_spec, ls.in_frames, ls.n_actions, obs_shape=ls.obs_shape,
                                     action_history=ls.action_history),
                         params=ls.params, replay=ls.replay, state=state_arrays(ls.state), control=tel.control,
                         config=ls.config, device=ls.device, turnstile=None, learner=0, stats=lrow, seed=ls.seed,
                         mirrors=ls.mirrors, host=ls.host)
    learner.join()
    learner.warmup()
    quiet_gc()
    wrow[WorkerCol.STARTS] += 1  # ready
    lrow[LearnerCol.STARTS] += 1
    if not actor.wait_first_frame(lambda: tel.stopping):
        return
    learning = False

    last_step = -1

    def act() -> None:
        # sequential interaction: one action per new observation (the agent waits for the env when it
        # is faster than it, and falls behind by whole steps when it is slower)
        nonlocal last_step
        t0 = time.monotonic()
        while ls.obs_board.step <= last_step and not tel.stopping:
            try:
                ls.obs_board.wait_step(last_step, 0.05)
            except TimeoutError:
                pass
        wrow[WorkerCol.WAIT_S] += time.monotonic() - t0
        action, step, _, _ = actor.act(wrow)
        last_step = step
        t1 = time.monotonic()
        spec.action_board.post(action, step, 0)
        t2 = time.monotonic()
        wrow[WorkerCol.POST_S] += t2 - t1
        wrow[WorkerCol.TURNS] += 1
        wrow[WorkerCol.HEARTBEAT] = t2
        tel.record_post(0, t2)

    def learn() -> None:
        nonlocal learning
        if not learning:
            learning = len(ls.replay) >= ls.learning_starts
        if learning:
            learner.update()
        lrow[LearnerCol.HEARTBEAT] = time.monotonic()

    steps = (act, learn) if spec.order == "inflearn" else (learn, act)
    try:
        while not tel.stopping:
            for fn in steps:
                fn()
    except Exception:
        traceback.print_exc()
        raise
