"""Ownership of shared-memory segments on the Python side.

Every rtcore shared object (replay buffer, boards, schedule, turnstile, parameter store) is one POSIX
shared-memory segment. The process that *creates* a segment owns its name: it unlinks it on ``close()``,
when the object is garbage-collected, and at interpreter exit (also after an uncaught exception).
Processes that ``attach()`` never unlink. A forked child inherits the parent's objects but not their
ownership: ownership is tied to the creating pid.

Shared objects pickle as their segment name, so they can be handed to ``spawn``-ed processes, which
attach on unpickling.

A process killed by SIGKILL (or the OOM killer) runs no exit handler, so its segments stay in
``/dev/shm``. Default names carry the creator's pid *and start time*, so
:func:`reclaim_dead_segments` (run when a run starts, for its prefix, and by ``rtcore cleanup``, for
every prefix) can tell a dead creator from a live one, even when the pid was handed to another process since; it never touches a
segment whose creator runs.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from rtcore import _core
from rtcore._validate import as_name
from rtcore.errors import ClosedError
from rtcore.shared._liveness import alive, self_start_time

__all__ = ["SharedObject", "default_name", "owned_segments", "SegmentInfo", "list_segments", "reclaim_dead_segments",
           "ANY_PREFIX"]

SHM_DIR = "/dev/shm"

# Tests set RTCORE_SHM_PREFIX so that leak checks see only their own segments.
_PREFIX = os.environ.get("RTCORE_SHM_PREFIX", "rtcore")
# name -> pid of the creating process. Consulted at exit so that a leaked object never leaks a segment.
_owned: dict[str, int] = {}


def default_name(kind: str) -> str:
    """A fresh segment name: ``rtcore-<kind>-<pid>.<start>-<random>`` (``start``: the creating process's
    start time in clock ticks since boot, so the name tells whether its creator still runs)."""
    return f"{_PREFIX}-{kind}-{os.getpid()}.{self_start_time()}-{secrets.token_hex(4)}"


# <prefix>-<kind>-<pid>[.<start>]-<8 hex>; names without a start time come from rtcore before it
_NAME = re.compile(r"^(?P<prefix>.+)-(?P<kind>[a-z_]+)-(?P<pid>[0-9]+)(?:\.(?P<start>[0-9]+))?-(?P<token>[0-9a-f]{8})$")
# the first bytes of every segment rtcore's core creates (csrc/shm/segment.h: Header.magic, "TCORE_" then
# the layout generation)
_MAGIC = b"TCORE_"
ANY_PREFIX = "*"  # list_segments / reclaim_dead_segments: the segments of every prefix (rtcore cleanup)


def _is_rtcore_segment(path: str) -> bool:
    """Whether the file at ``path`` starts with rtcore's segment header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_MAGIC)) == _MAGIC
    except OSError:  # gone, or another user's and unreadable
        return False


@dataclass(frozen=True)
class SegmentInfo:
    """A segment in ``/dev/shm`` named by :func:`default_name`."""

    name: str
    kind: str
    pid: int
    start: int | None  # None: an older name without the start time (only the pid can be checked)
    size: int          # bytes
    creator_alive: bool


def list_segments(prefix: str | None = None, shm_dir: str = SHM_DIR) -> list[SegmentInfo]:
    """The segments in ``shm_dir`` with default names of ``prefix`` (default: ``$RTCORE_SHM_PREFIX`` or
    ``rtcore``), with whether their creator still runs. Other names are never listed.

    ``prefix=ANY_PREFIX`` (``"*"``): rtcore's segments of every prefix (a run under another
    ``$RTCORE_SHM_PREFIX``), which must show they are rtcore's twice over, since another program may name
    its files alike: a name of the current format (``<prefix>-<kind>-<pid>.<start>-<8 hex>``: the creator's
    start time in it), and rtcore's segment header at the start of the file. Names of the current prefix
    are listed as with ``prefix=None`` (older names without the start time, half-created segments)."""
    every = prefix == ANY_PREFIX
    prefix = _PREFIX if prefix is None or every else prefix
    out = []
    try:
        names = sorted(os.listdir(shm_dir))
    except FileNotFoundError:
        return []
    for name in names:
        m = _NAME.match(name)
        if m is None:
            continue
        if m["prefix"] != prefix and not (every and m["start"] is not None
                                          and _is_rtcore_segment(os.path.join(shm_dir, name))):
            continue
        try:
            size = os.stat(os.path.join(shm_dir, name)).st_size
        except FileNotFoundError:
            continue
        pid, start = int(m["pid"]), (int(m["start"]) if m["start"] is not None else None)
        out.append(SegmentInfo(name, m["kind"], pid, start, size, alive(pid, start)))
    return out


def reclaim_dead_segments(prefix: str | None = None, *, dry_run: bool = False,
                          shm_dir: str = SHM_DIR) -> list[SegmentInfo]:
    """Unlinks the segments of ``prefix`` (as :func:`list_segments`: ``ANY_PREFIX`` for every prefix) whose
    creating process is dead (killed before it could unlink them); returns them. A segment whose creator runs is never touched. Processes that still map a
    reclaimed segment keep their mapping (unlinking only removes the name)."""
    gone = []
    for seg in list_segments(prefix, shm_dir):
        if seg.creator_alive:
            continue
        if not dry_run:
            try:
                os.unlink(os.path.join(shm_dir, seg.name))
            except FileNotFoundError:  # another cleaner was first
                continue
            except PermissionError:  # another user's segment (/dev/shm is sticky): theirs to remove
                continue
        gone.append(seg)
    return gone


def owned_segments() -> list[str]:
    """Names of the segments this process created and has not unlinked yet."""
    pid = os.getpid()
    return [n for n, p in _owned.items() if p == pid]


def _unlink_owned(name: str, pid: int) -> None:
    if os.getpid() != pid:  # a forked child: the parent owns it
        return
    if _owned.get(name) == pid:
        del _owned[name]
        try:
            _core.unlink_segment(name)
        except OSError:
            pass


@atexit.register
def _unlink_all_at_exit() -> None:
    for name in owned_segments():
        _unlink_owned(name, os.getpid())


class SharedObject:
    """Base class of rtcore's shared-memory objects.

    A subclass sets ``_KIND`` (used in default names) and ``_CORE`` (its ``rtcore._core`` class, with
    ``create(name, ...)`` and ``attach(name)``). Its constructor validates the arguments and calls
    ``self._adopt(self._CORE.create(name, ...), name, owner=True)`` with ``name = self._new_name(name)``;
    :meth:`attach` is the one way to open an existing segment. Both end in :meth:`_from_handle`, where
    the subclass reads its layout from the handle. The handle is reached through ``self._h``, which raises once closed.
    """

    _KIND: ClassVar[str] = "object"
    _CORE: ClassVar[Any] = None

    @classmethod
    def attach(cls, name: str):
        """Attaches to an existing segment by name, from any process; never unlinks it.

        ``FileNotFoundError`` if there is no such segment, ``rtcore.LayoutError`` if it holds another
        structure or another layout version.
        """
        self = cls.__new__(cls)
        name = _core.check_segment_name(as_name("name", name))
        self._adopt(cls._CORE.attach(name), name, owner=False)
        return self

    @classmethod
    def _new_name(cls, name: str | None) -> str:
        """The segment name for a new object: ``name`` checked, or a fresh default."""
        return default_name(cls._KIND) if name is None else _core.check_segment_name(as_name("name", name))

    def _adopt(self, handle: Any, name: str, owner: bool) -> None:
        self.__handle = handle
        self._name = name
        self._owner = owner
        if owner:
            _owned[self._name] = os.getpid()
            self._finalizer = weakref.finalize(self, _unlink_owned, self._name, os.getpid())
        else:
            self._finalizer = None
        self._from_handle(handle)

    def _from_handle(self, handle: Any) -> None:
        """Reads the object's layout from a new handle (override where there is any)."""

    @property
    def _h(self) -> Any:
        h = self.__handle
        if h is None:
            raise ClosedError(f"{type(self).__name__} '{self._name}' is closed")
        return h

    @property
    def name(self) -> str:
        """The shared-memory segment name; pass it to ``attach()`` in another process."""
        return self._name

    @property
    def owner(self) -> bool:
        """True in the process that created the segment (and will unlink it)."""
        return self._owner and _owned.get(self._name) == os.getpid()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self.__handle is None

    def close(self) -> None:
        """Detach from the segment; the creating process also unlinks its name.

        Arrays handed out earlier that view the segment stay valid: the mapping lives until the last
        of them is gone. Closing twice is harmless.
        """
        h, self.__handle = self.__handle, None
        if h is not None and hasattr(h, "close"):
            h.close()
        if self._finalizer is not None:
            self._finalizer()  # unlinks if this process owns the name

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        return (type(self).attach, (self._name,))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"{type(self).__name__}(name={self._name!r}, {state})"
