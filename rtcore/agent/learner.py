"""Learner processes: M of them run :class:`rtcore.agent.dqn.DQNLearner` in turnstile order.

``learner_main`` is a learner process's entry point: it waits for enough data, joins the turnstile,
beats its heartbeat from a thread (a gradient can outlast the heartbeat timeout) and updates, held
back to ``updates_per_step`` updates per env step so learning never runs away from acting.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtcore.agent._proc import child_setup, heartbeat_thread, process_context
from rtcore.agent.dqn import DQNLearner, LearnerConfig
from rtcore.agent.telemetry import Control, LearnerCol, Telemetry

__all__ = ["LearnerSpec", "learner_main", "measure_updates_per_second", "state_arrays"]


@dataclass
class LearnerSpec:
    """Everything a learner process gets (shared objects pickle as their segment names)."""

    learner: int
    model_spec: str
    in_frames: int
    n_actions: int
    config: LearnerConfig
    device: str
    threads: int
    nice: int
    learning_starts: int
    updates_per_step: float
    params: Any
    replay: Any
    turnstile: Any
    state: Any          # the learner state (rtcore.agent.optim): SharedArray (7, numel) float32 on
                        # the CPU, a CUDA tensor (IPC-shared), or a list of replicas, one per GPU
    telemetry: Telemetry
    obs_board: Any
    seed: int
    obs_shape: tuple[int, ...] = (84, 84)  # one observation frame, as the env gives it
    mirrors: Any = None  # device_mirror tensors, one per replica (readers on a GPU use them)
    host: bool | None = None  # also write versions to the store's host buffers (default: no mirror)
    action_history: int = 0  # K: the model's second input (rtcore.models.history)


def state_arrays(state: Any) -> Any:
    """The arrays/tensors of a learner state as a spec carries it (SharedArray -> its numpy view)."""
    if isinstance(state, (list, tuple)):
        return [state_arrays(s) for s in state]
    return state.array if hasattr(state, "array") else state


def _wait_for_data(replay: Any, needed: int, tel: Telemetry, beat: np.ndarray) -> bool:
    while len(replay) < needed:
        if tel.stopping:
            return False
        beat[LearnerCol.HEARTBEAT] = time.monotonic()
        time.sleep(0.02)
    return True


def _throttle(updates_per_step: float, tel: Telemetry, obs_board: Any, beat: np.ndarray, turnstile: Any = None,
              slot: int = 0) -> bool:
    """Waits while the learners are ahead of ``updates_per_step`` updates per env step."""
    if updates_per_step <= 0:
        return True
    while int(tel.control[Control.UPDATES]) >= updates_per_step * max(1, obs_board.step):
        if tel.stopping:
            return False
        beat[LearnerCol.HEARTBEAT] = time.monotonic()
        if turnstile is not None:
            turnstile.heartbeat(slot)
        try:
            obs_board.wait_step(obs_board.step, 0.05)
        except TimeoutError:
            pass
    return True


def learner_main(spec: LearnerSpec) -> None:
    """Entry point of a learner process."""
    child_setup(spec.threads)
    if spec.nice:
        os.nice(spec.nice)  # acting first: learning must never take the CPU from the env and the workers
    import torch

    from rtcore.models import build_model

    torch.manual_seed(spec.seed)
    tel = spec.telemetry
    row = tel.learners[spec.learner]
    row[LearnerCol.PID] = os.getpid()
    row[LearnerCol.STARTS] += 1
    row[LearnerCol.READY] = 0
    row[LearnerCol.TURN_BEAT] = 0.0
    row[LearnerCol.HEARTBEAT] = time.monotonic()
    model = build_model(spec.model_spec, spec.in_frames, spec.n_actions, obs_shape=spec.obs_shape,
                        action_history=spec.action_history)
    learner = DQNLearner(model, params=spec.params, replay=spec.replay, state=state_arrays(spec.state),
                         control=tel.control, config=spec.config, device=spec.device, turnstile=spec.turnstile,
                         learner=spec.learner, stats=row, seed=spec.seed, mirrors=spec.mirrors, host=spec.host)
    learner.warmup()
    row[LearnerCol.READY] = 1
    stop = lambda: tel.stopping  # noqa: E731
    try:
        if not _wait_for_data(spec.replay, spec.learning_starts, tel, row):
            return
        if not learner.join(stop):
            return
        if spec.turnstile is not None:
            turnstile, slot = spec.turnstile, learner._slot

            def beat() -> None:  # the turnstile's heartbeat, and the same beat for the runner's stall check
                turnstile.heartbeat(slot)
                row[LearnerCol.TURN_BEAT] = time.monotonic()

            heartbeat_thread(beat, lambda: tel.stopping, turnstile.heartbeat_timeout / 4, "rtcore-learner-heartbeat")
        while not tel.stopping:
            if not _throttle(spec.updates_per_step, tel, spec.obs_board, row, spec.turnstile, spec.learner):
                break
            if learner.update(stop) is None:
                break
    except Exception:
        traceback.print_exc()
        raise
    finally:
        row[LearnerCol.TURN_BEAT] = 0.0
        learner.leave()


def measure_updates_per_second(model_spec: str, learners: int, seconds: float = 5.0, *, batch_size: int = 32,
                               frame_stack: int = 4, n_actions: int = 6, capacity: int = 2_000, device: str = "cpu",
                               threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Runs ``learners`` learner processes on a replay buffer of random frames for ``seconds``.

    Returns ``updates`` and ``updates_per_s`` (all learners together, timed from the first applied
    update, so process start-up is not counted), and ``staleness`` (mean versions between a
    gradient's snapshot and its application: M - 1 when the turns are fair).
    """

    import rtcore
    from rtcore.models import build_model
    from rtcore.shared.params import bind_flat
    from rtcore.shared.shared_array import SharedArray

    if learners < 1:
        raise ValueError(f"learners must be >= 1, got {learners}")
    rng = np.random.default_rng(seed)
    shape = (84, 84)
    objs: list[Any] = []
    procs: list[Any] = []
    try:
        replay = rtcore.ReplayBuffer(capacity, shape, frame_stack=frame_stack, n_step=3)
        objs.append(replay)
        for i in range(capacity):
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            end = (i + 1) % 500 == 0
            replay.add(0, frame, int(rng.integers(n_actions)), float(rng.normal()), end, False,
                       next_obs=frame if end else None)
        import torch

        torch.manual_seed(seed)
        model = build_model(model_spec, frame_stack, n_actions)
        flat = bind_flat(model).detach().numpy().copy()
        params = rtcore.ParamStore(flat.size, buffers=learners + 2)
        objs.append(params)
        params.publish(flat)
        mirrors = None
        if torch.device(device).type == "cuda":  # GPU-resident: state and versions live on the GPU, IPC-shared
            from rtcore.agent.dqn import new_learner_state
            from rtcore.shared.params import device_mirror

            state: Any = new_learner_state(flat, device)
            mirrors = device_mirror(params, device)
        else:
            from rtcore.agent.optim import STATE_ROWS, init_learner_state

            state = SharedArray((STATE_ROWS, flat.size), "float32")
            objs.append(state)
            init_learner_state(state.array, flat)
        tel = Telemetry(1, learners)
        objs.append(tel)
        turnstile = rtcore.Turnstile(learners)
        objs.append(turnstile)
        ctx = process_context()
        for j in range(learners):
            spec = LearnerSpec(learner=j, model_spec=model_spec, in_frames=frame_stack, n_actions=n_actions,
                               config=LearnerConfig(batch_size=batch_size), device=device, threads=threads, nice=0,
                               learning_starts=batch_size, updates_per_step=0.0, params=params, replay=replay,
                               turnstile=turnstile, state=state, telemetry=tel, obs_board=None, seed=seed + j,
                               mirrors=mirrors)
            p = ctx.Process(target=learner_main, args=(spec,), daemon=True)
            p.start()
            procs.append(p)
        deadline = time.monotonic() + 120
        while int(tel.control[Control.UPDATES]) < learners:  # every learner has loaded and is updating
            if time.monotonic() > deadline or any(p.exitcode is not None for p in procs):
                raise RuntimeError("learners did not start")
            time.sleep(0.01)
        def next_update() -> tuple[int, float]:
            """Waits for the update counter to move; returns (count, time): windows that start and end at
            an update, so a window of a few slow updates is not quantised to whole updates."""
            u = int(tel.control[Control.UPDATES])
            limit = time.monotonic() + 300
            while int(tel.control[Control.UPDATES]) == u:
                if time.monotonic() > limit or any(p.exitcode is not None for p in procs):
                    raise RuntimeError("learners stopped updating")
                time.sleep(0.0005)
            return int(tel.control[Control.UPDATES]), time.monotonic()

        u0, t0 = next_update()
        time.sleep(seconds)
        u1, t1 = next_update()
        tel.control[Control.STOP] = 1
        L = tel.learners[:learners]
        n = L[:, LearnerCol.UPDATES].sum()
        return {"learners": learners, "updates": u1 - u0, "updates_per_s": (u1 - u0) / (t1 - t0),
                "staleness": float(L[:, LearnerCol.STALENESS].sum() / max(1, n)),
                "grad_ms": 1e3 * float(L[:, LearnerCol.GRAD_S].sum() / max(1, n)),
                "apply_ms": 1e3 * float(L[:, LearnerCol.APPLY_S].sum() / max(1, n))}
    finally:
        for o in objs:
            if isinstance(o, Telemetry):
                o.control[Control.STOP] = 1
        for p in procs:
            p.join(5.0)
            if p.exitcode is None:
                p.kill()
                p.join(5.0)
        for o in reversed(objs):
            o.close()
