"""Plumbing that every child process of a run shares: set-up, realtime priority, GC control, joining a
slot of a schedule or turnstile, and a heartbeat thread."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from rtcore.errors import SlotError
from rtcore.shared._liveness import die_with_parent

__all__ = ["Child", "WORKER_RT_PRIORITY", "apply_realtime", "child_setup", "heartbeat_thread", "join_slot",
           "process_context", "quiet_gc"]

# SCHED_FIFO priority of workers with --realtime: below the env driver's (10), so a tick always wins
WORKER_RT_PRIORITY = 5


def process_context(kind: str | None = None):
    """The multiprocessing context for a run's workers and learners.

    ``forkserver`` (default on Linux): a server process imports torch and rtcore once
    (``rtcore.agent._preload``) and forks every child from it, so the children share those pages instead
    of each holding a private copy (~140 MiB per process for ``import torch``), and a child starts in
    a fraction of a second (respawns, elastic N). ``spawn`` where there is no fork server, or when
    ``RTCORE_START_METHOD=spawn``. Specs pickle the same way with both (CUDA tensors as IPC handles)."""
    import multiprocessing as mp

    kind = kind or os.environ.get("RTCORE_START_METHOD", "forkserver")
    if kind not in mp.get_all_start_methods() or (kind == "forkserver" and sys.version_info < (3, 11)):
        kind = "spawn"
    ctx = mp.get_context(kind)
    if kind == "forkserver":
        ctx.set_forkserver_preload(["rtcore.agent._preload"])
        _start_forkserver()
    return ctx


def _start_forkserver() -> None:
    """Starts the fork server with PYTHONSAFEPATH: its ``python -c`` would otherwise put the cwd first on
    sys.path and, run from a source checkout, import that tree (without its compiled core) instead of
    the installed package the runner uses (Python >= 3.11)."""
    from multiprocessing import forkserver

    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = old


def child_setup(threads: int = 1) -> None:
    """Common start of every child: it dies with the runner (``PR_SET_PDEATHSIG``: a SIGKILLed runner
    leaves no child behind; its loops also check :func:`rtcore.shared._liveness.parent_gone` through
    ``Telemetry.stopping``); the runner handles Ctrl-C and tells children to stop; torch gets
    ``threads`` intra-op threads and one inter-op thread."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set
        pass


def apply_realtime(priority: int, who: str) -> None:
    """SCHED_FIFO at ``priority`` for this process, best effort; says on stderr when it is refused."""
    from rtcore import _core

    status = _core.apply_realtime(priority)
    if not status.startswith("on"):
        print(f"rtcore: {who}: realtime scheduling: {status}", file=sys.stderr, flush=True)


def quiet_gc() -> None:
    """No cyclic garbage collection in a realtime loop: a full collection with torch loaded takes tens of
    milliseconds, longer than a turn's slack. Everything allocated so far is frozen out of the collector;
    the loop itself makes no reference cycles (its tensors and tuples are freed by reference counting)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.disable()


def join_slot(join: Callable[[int], int], slot: int, timeout: float, should_stop: Callable[[], bool]) -> int | None:
    """Joins ``slot`` of a schedule or turnstile, waiting while it still counts as taken.

    A respawned process takes the slot of the one that died; the slot frees as soon as the schedule or
    turnstile sees that the holder's process has exited (pid + start time, ~0.1 s), or once a silent
    holder's heartbeat is older than the timeout. None if told to stop.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return join(slot)
        except SlotError:  # still held: a live holder, or a dead one for the ~0.1 s before its process is looked up
            if time.monotonic() > deadline:
                raise
            if should_stop():
                return None
            time.sleep(0.05)


def heartbeat_thread(beat: Callable[[], None], should_stop: Callable[[], bool], period: float, name: str) -> None:
    """Calls ``beat`` every ``period`` seconds from a daemon thread until ``should_stop``: the process
    stays alive to its watchers also through a long computation (a big model's gradient). ``beat``
    raising SlotError (not joined yet, or dropped) is ignored: the main thread's next call says so."""

    def loop() -> None:
        while not should_stop():
            try:
                beat()
            except SlotError:  # not joined yet, or dropped: the main thread's next call says so
                pass
            time.sleep(period)

    threading.Thread(target=loop, name=name, daemon=True).start()


class Child:
    """A spawned worker or learner and what it takes to respawn it."""

    def __init__(self, kind: str, index: int, target: Any, spec: Any, ctx: Any) -> None:
        self.kind, self.index, self.target, self.spec, self.ctx = kind, index, target, spec, ctx
        self.proc: Any = None
        self.restarts = 0
        self.lost = False  # died and was not respawned (--no-respawn)
        self.start()

    def start(self) -> None:
        self.proc = self.ctx.Process(target=self.target, args=(self.spec,), name=f"rtcore-{self.kind}-{self.index}",
                                     daemon=True)
        self.proc.start()

    @property
    def dead(self) -> bool:
        return self.proc.exitcode is not None

    def stop(self, deadline: float) -> None:
        self.proc.join(max(0.0, deadline - time.monotonic()))
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(5.0)
