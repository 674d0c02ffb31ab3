"""Process liveness by pid *and* start time, and children that die with their parent (Linux).

A pid alone does not name a process for long: once it exits, the kernel may hand the same pid to a new
one. A process is named here by ``(pid, start)``, ``start`` being its start time in clock ticks since
boot (field 22 of ``/proc/<pid>/stat``), the token the C++ core uses too (``csrc/common/liveness.h``).

:func:`die_with_parent` arms ``PR_SET_PDEATHSIG`` in a child, so the kernel kills it the moment its
parent dies (also by SIGKILL, where no handler runs), and :func:`parent_gone` is the same check for a
loop to make without a system call's worth of trust in the signal (it also covers the window before
the signal was armed).
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["start_time", "alive", "self_start_time", "die_with_parent", "parent_gone"]

_PR_SET_PDEATHSIG = 1
_self: tuple[int, int] | None = None  # (pid, start) of this process, cached per pid (fork changes it)
_parent: int | None = None            # the parent die_with_parent was armed for


def _stat(pid: int) -> tuple[str, int | None]:
    """("running", start) | ("zombie", None) | ("gone", None) | ("hidden", None): /proc/<pid>/stat unreadable."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return "gone", None
    except PermissionError:
        return "hidden", None
    rest = stat[stat.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
    if len(rest) < 20:
        return "hidden", None
    if rest[0] in (b"Z", b"X"):
        return "zombie", None
    return "running", int(rest[19])  # field 22; rest[0] is field 3


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if there is no such process, it is a zombie
    (it has exited and waits to be reaped), or /proc does not tell."""
    return _stat(pid)[1]


def alive(pid: int, start: int | None = None) -> bool:
    """True while the process ``pid`` runs and, when ``start`` is given, is the one that started then
    (not a later process that reused the pid). When the system does not let this process see another's
    start time (``hidepid``, another OS), a process that exists counts as alive: never mistaken for dead."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return start is None or start == self_start_time()
    state, st = _stat(pid)
    if state == "running":
        return start is None or st == start
    if state == "zombie":
        return False
    try:  # gone from /proc, or hidden: ask the kernel whether the pid exists at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def self_start_time() -> int:
    """This process's start time (clock ticks since boot; 0 where /proc cannot tell)."""
    global _self
    pid = os.getpid()
    if _self is None or _self[0] != pid:
        _self = (pid, start_time(pid) or 0)
    return _self[1]


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    ``parent``: the pid the caller expects as its parent (default: the current OS parent, which for a
    child started by a fork server is that server). If that parent is already gone (it died before the signal was armed, and this
    process was handed to init or a subreaper), ``sig`` is sent at once. Returns whether the signal
    could be armed (False on systems without prctl; :func:`parent_gone` still works there).

    The kernel fires the signal when the *thread* that created this process exits: spawn children from
    a thread that lives as long as they should.
    """
    global _parent
    if parent is None:
        # the process that forked this one: the runner (spawn), or the multiprocessing fork server, which
        # exits when the runner does (so the signal still follows the runner, one step later)
        parent = os.getppid()
    _parent = int(parent) if parent else None
    armed = False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if parent_gone():
        os.kill(os.getpid(), sig)
    return armed


def parent_gone() -> bool:
    """True in a process that armed :func:`die_with_parent` once its parent has died (it was reparented).
    Cheap (one ``getppid``); False in a process that never armed it."""
    return _parent is not None and os.getppid() != _parent
