"""The environment <-> inference hand-off: :class:`ObsBoard` and :class:`ActionBoard`.

Both live in shared memory (one segment each), pickle as their name (a ``spawn``-ed worker attaches on
unpickling), and never block the environment:

* :class:`ObsBoard`: the env publishes each new frame; inference workers read the newest stack of
  ``frame_stack`` frames and the env step it ends at. One writer, many readers, seqlock per slot: a
  read is whole or retried, never torn.
* :class:`ActionBoard`: inference workers post actions (many posters, none waits); the env takes the
  newest action not yet taken, at most once, or gets ``None`` and applies its default action.

A worker's loop::

    obs = np.empty((4, 84, 84), np.uint8)               # preallocated once
    step = -1
    while running:
        step = obs_board.wait_step(step, timeout=1.0)   # a newer frame than the last one used
        _, step = obs_board.read(out=obs)               # copy the newest stack, no allocation
        action_board.post(policy(obs), step, worker_id)

and the env's tick::

    got = action_board.take()                           # (action, obs_step, worker) or None
    action = default_action if got is None else got[0]

With an action history (``ObsBoard(..., action_history=K)``, the delay-aware observation of
``--action-history K``), the env brackets its take with :meth:`ObsBoard.begin_apply` and
:meth:`ObsBoard.end_apply`, and a worker reads the history with the stack::

    hist = np.empty(K + 1, np.int64)
    _, step = obs_board.read(out=obs, history=hist, actions=action_board)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rtcore import _core
from rtcore._validate import (
    FOREVER_SECONDS,
    INT64_MAX,
    as_dtype,
    as_shape,
    at_least,
    clean_type_error,
    in_range,
    index,
    seconds,
)
from rtcore.shared._shm import SharedObject

_MAX_SPIN = 60.0  # seconds a wait may spin before sleeping


__all__ = ["ObsBoard", "ActionBoard"]


class ObsBoard(SharedObject):
    """The newest observation stack and the env step it ends at, in shared memory.

    Args:
        obs_shape: shape of one frame, e.g. ``(84, 84)``.
        dtype: numpy dtype of a frame (numeric or bool).
        frame_stack: how many of the newest frames :meth:`read` returns, oldest first (>= 1). The
            board keeps them in a ring: publishing copies one frame, never a whole stack.
        name: segment name (default: a fresh ``rtcore-obs-...``).
        action_history: K, the actions applied before the newest frame that :meth:`read` can return
            with the stack (0: none; at most 1024). The env reports each step's action with
            :meth:`begin_apply` / :meth:`end_apply`.

    One process publishes (the environment); any number read, in any process (:meth:`attach`, or pass
    the board to a ``spawn``-ed process). Steps are the env's global step counter: ``>= 0`` and strictly
    increasing across publishes (including across episodes).
    """

    _KIND = "obs"
    _CORE = _core.ObsBoard

    def __init__(
        self,
        obs_shape: Sequence[int] | int,
        dtype: Any = "uint8",
        frame_stack: int = 1,
        name: str | None = None,
        action_history: int = 0,
    ) -> None:
        shape = as_shape("obs_shape", obs_shape, lo=1)
        if not shape:
            raise ValueError("obs_shape must be a non-empty tuple, got ()")
        dt = as_dtype("dtype", dtype)
        fs = at_least("frame_stack", frame_stack, 1)
        if fs > 1024:
            raise ValueError(f"frame_stack must be in [1, 1024], got {fs}")
        k = in_range("action_history", action_history, 0, 1024)
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, list(shape), dt, fs, k), name, owner=True)

    def _from_handle(self, handle: Any) -> None:
        self._obs_shape = tuple(handle.obs_shape)
        self._dtype = np.dtype(handle.dtype)
        self._frame_stack = int(handle.frame_stack)
        self._action_history = int(handle.action_history)

    def publish(self, frame: np.ndarray, step: int, episode_start: bool = False) -> None:
        """Publish one frame (shape ``obs_shape``, dtype ``dtype``, C-contiguous) taken at env ``step``.

        ``episode_start=True``: the stack restarts, padded with this frame. Never blocks (the GIL is
        released for the copy).
        """
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame must be a numpy array of shape {self._obs_shape} and dtype {self._dtype}, "
                            f"got {type(frame).__name__}")
        st = at_least("step", step, 0)
        if st > INT64_MAX:
            raise ValueError(f"step must be below 2**63, got {st}")
        self._h.publish(frame, st, bool(episode_start))

    def read(self, out: np.ndarray | None = None, history: np.ndarray | None = None,
             actions: "ActionBoard | None" = None) -> tuple[np.ndarray, int]:
        """Copy the newest stack ``[frame_stack, *obs_shape]`` (oldest frame first) and return
        ``(stack, step)``, ``step`` being the env step of the newest frame.

        ``out``: a C-contiguous, writeable array of that shape and dtype to copy into (no allocation);
        otherwise a new array. Before the first publish: zeros and step ``-1``. The copy is whole: a
        frame being overwritten during the read is detected and re-read. The GIL is released.

        ``history`` (a board with ``action_history=K``): an int64 array of ``K + 1`` entries, filled with
        the action history of the stack, read with it (no torn pairing): the actions applied at the K
        steps before its newest frame ``u`` (each the action that led to the next frame, oldest first;
        :data:`rtcore.shared.replay.NO_ACTION` before the episode start), then the *pending* slot: the
        action the env applies at the tick of ``u`` if it has taken it (none if that was its default),
        else the post pending on ``actions`` (the :class:`ActionBoard`; none if nothing is pending or
        ``actions`` is None). :meth:`rtcore.ReplayBuffer.sample` gathers the same values for the
        transition of an action computed from this stack; only the pending slot can differ, when a newer
        post supersedes the pending one before the env takes it.
        """
        if out is not None and not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array of shape {self.stack_shape} and dtype {self._dtype} or None, "
                            f"got {type(out).__name__}")
        if history is None:
            return self._h.read(out)
        if not isinstance(history, np.ndarray):
            raise TypeError(f"history must be a numpy int64 array of shape ({self._action_history + 1},), "
                            f"got {type(history).__name__}")
        if actions is not None and not isinstance(actions, ActionBoard):
            raise TypeError(f"actions must be an ActionBoard or None, got {type(actions).__name__}")
        return self._h.read_history(out, history, None if actions is None else actions._h)

    def begin_apply(self, step: int) -> None:
        """The env is about to take the action of its tick at ``step`` (the newest published step).

        Call it before :meth:`ActionBoard.take` and :meth:`end_apply` after: a reader of the history
        then never mistakes the take in progress for "nothing pending". Boards with an action history."""
        self._h.begin_apply(step)

    def end_apply(self, step: int, action: int, was_default: bool) -> None:
        """The env applies ``action`` (>= 0) at ``step`` (the newest published step); ``was_default``:
        it is the env's default action (no post was taken)."""
        self._h.end_apply(step, action, bool(was_default))

    @property
    def action_history(self) -> int:
        """K: actions applied before the newest frame that :meth:`read` returns with ``history=`` (0: none)."""
        return self._action_history

    @property
    def step(self) -> int:
        """Env step of the newest published frame; ``-1`` before the first publish."""
        return self._h.step

    @property
    def published(self) -> int:
        """Frames published so far."""
        return self._h.published

    def wait_step(self, after: int, timeout: float | None = None, spin: float = 0.0) -> int:
        """Block until a frame with step ``> after`` is published; return the newest step.

        ``timeout`` (seconds, ``None`` = forever): raise ``TimeoutError`` when it passes first.
        ``spin``: seconds to spin before sleeping (lower wake-up latency, burns a core). The GIL is
        released and Ctrl-C works.
        """
        a = in_range("after", after, -(2**63), INT64_MAX)
        t = None if timeout is None else seconds("timeout", timeout, positive=False)
        if t is not None and t > FOREVER_SECONDS:
            t = None
        return self._h.wait_step(a, t, seconds("spin", spin, positive=False, hi=_MAX_SPIN))

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one frame."""
        return self._obs_shape

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of a frame."""
        return self._dtype

    @property
    def frame_stack(self) -> int:
        """Frames per stack that :meth:`read` returns."""
        return self._frame_stack

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Shape :meth:`read` returns: ``(frame_stack, *obs_shape)``."""
        return (self._frame_stack, *self._obs_shape)


class ActionBoard(SharedObject):
    """The newest posted action, taken by the environment at most once.

    Args:
        name: segment name (default: a fresh ``rtcore-act-...``).
        max_workers: worker ids are ``0 .. max_workers - 1`` (default 256, at most 32768).

    ``post`` (inference workers, any process) and ``take`` (the env) never wait for each other:
    ``post`` is lock-free (it retries only when another post lands at the same instant), ``take`` is
    lock-free and returns ``None`` when nothing new was posted. "Newest" is post order (a global
    sequence number given at post time), not ``obs_step``. Guarantees: each post is taken at most once;
    a take returns the newest post published when it looked; :attr:`superseded` counts exactly the
    posts replaced by a newer one before being taken. At rest,
    ``posted == taken + superseded + (1 if pending else 0)``.

    Each worker id posts from one thread at a time (a concurrent post with the same id raises
    ``rtcore.BusyError`` from this process, ``rtcore.SlotError`` from another live one); a worker id
    whose process died mid-post is taken over by the next poster.
    """

    _KIND = "act"
    _CORE = _core.ActionBoard

    def __init__(self, name: str | None = None, max_workers: int = 256) -> None:
        mw = in_range("max_workers", max_workers, 1, 32768)
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, mw), name, owner=True)

    def _from_handle(self, handle: Any) -> None:
        self._max_workers = int(handle.max_workers)

    def post(self, action: int, obs_step: int, worker: int) -> None:
        """Post ``action`` (an int), computed from the observation of env step ``obs_step``, by
        ``worker`` (``0 <= worker < max_workers``). Never blocks."""
        if type(action) is int and type(obs_step) is int and type(worker) is int:  # the hot path: no conversions
            try:
                self._h.post(action, obs_step, worker)
                return
            except TypeError:  # an int beyond int64 / int32: the checks below name it
                pass
        a = in_range("action", action, -(2**63), INT64_MAX)
        s = in_range("obs_step", obs_step, -(2**63), INT64_MAX)
        w = index("worker", worker)
        if not 0 <= w < self._max_workers:
            raise ValueError(f"worker must be in [0, {self._max_workers}), got {w}")
        try:
            self._h.post(a, s, w)
        except TypeError as e:
            raise clean_type_error(e, "ActionBoard.post") from None

    def take(self) -> tuple[int, int, int] | None:
        """The newest posted action not taken yet, as ``(action, obs_step, worker)``; ``None`` if
        nothing new was posted since the last take. Each post is returned at most once."""
        return self._h.take()

    def peek(self) -> tuple[int, int, int] | None:
        """What :meth:`take` would return now, without taking it (the pending post), or ``None``."""
        return self._h.peek()

    @property
    def posted(self) -> int:
        """Posts so far (counted when a post starts)."""
        return self._h.posted

    @property
    def taken(self) -> int:
        """Posts taken so far."""
        return self._h.taken

    @property
    def superseded(self) -> int:
        """Posts replaced by a newer post before being taken ("wasted actions"); counted at each take."""
        return self._h.superseded

    @property
    def pending(self) -> bool:
        """True if a posted action newer than the last taken one is waiting."""
        return self._h.pending

    @property
    def max_workers(self) -> int:
        """Worker ids are ``0 .. max_workers - 1``."""
        return self._max_workers
