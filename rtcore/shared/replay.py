"""Lock-free shared-memory replay buffer.

One or more environment processes write transitions; any number of learner processes sample batches,
all at once, each in its own process, with no lock anywhere (``csrc/replay/ring.h``).

Storage is per *stream* (one environment instance): ``capacity`` slots are split evenly across
``streams``, each stream written by one writer at a time. A slot is one observation frame plus that
step's action, reward and flags; the next observation of a step is the next step's frame on the same
stream, so each frame is stored once, and at an episode end the caller's ``next_obs`` is stored as an
extra slot. Frame stacks are rebuilt at sample time, padded with the episode's first frame and never
crossing an episode start (as Gymnasium's ``FrameStackObservation``).

Progress guarantees: ``add`` is wait-free; ``sample`` is lock-free (a draw overwritten while it is
copied is redrawn, so a sample never holds a torn transition; it raises ``TimeoutError`` only if
writers overwrite every draw before it can be copied, i.e. the buffer is far too small for the write
rate). A writer killed mid-``add`` loses only that step: another process can ``attach`` and write
the stream on, whose state lives entirely in shared memory. Episodes never join: a writer in another
process starts a new episode and closes the dead writer's open one as truncated (see :meth:`add`).

Every argument is checked before anything is written: sizes whose memory would overflow, negative
actions or delays and non-finite rewards are refused with an exception naming the argument; a segment
whose header does not describe a consistent ring is refused on ``attach`` (``rtcore.LayoutError``).

Prioritized replay (``prioritized=True``, Schaul et al. 2016, proportional variant): each transition
is drawn with probability ``p_i**alpha / sum_k p_k**alpha`` over all streams; a new transition enters at
the largest priority given so far (1 before any); ``update_priorities(batch.index, td_errors)`` may be
called from any process; ``batch.weight`` holds the importance weights ``(N * P(i))**-beta``, divided by
the batch's largest. The priorities live in a sum tree in the same shared segment
(``csrc/replay/sum_tree.h``): ``add`` stays free of locks (the ring write is wait-free, setting the new
slot's priority is lock-free), ``sample`` and ``update_priorities`` are lock-free, sums are exact
integers (priorities are stored as ``p**alpha`` in fixed point, resolution 2**-24, at most ~65536), so
draws are exactly proportional whenever no update is in flight; a draw concurrent with updates follows a
mix of the sums before and after them. An update for a transition overwritten since it was sampled is
ignored (``update_priorities`` returns how many were applied).

Example::

    buf = rtcore.ReplayBuffer(100_000, (84, 84), frame_stack=4, streams=8, n_step=3)
    buf.add(stream, obs, action, reward, terminated, truncated, next_obs=final_obs)
    batch = buf.sample(32)          # batch.obs: uint8 [32, 4, 84, 84]

    per = rtcore.ReplayBuffer(100_000, (84, 84), frame_stack=4, prioritized=True, alpha=0.6, beta=0.4)
    batch = per.sample(32)          # batch.weight: float32 [32]
    per.update_priorities(batch.index, np.abs(td_error) + 1e-6)

Length: one class over the core handle (add, add_many/add_batch, sample, priorities), each call
checking its arguments with messages that name them; the checks are most of the lines.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rtcore import _core
from rtcore._validate import INT64_MAX, as_bool, as_dtype, as_shape, at_least, clean_type_error, in_range, index
from rtcore.shared._shm import SharedObject

__all__ = ["ReplayBuffer", "ReplayBatch", "NO_ACTION"]

NO_ACTION = -1
"""The "none" token of action histories: a slot before the episode start, or no pending post."""


@dataclasses.dataclass(eq=False)
class ReplayBatch:
    """A batch of transitions: numpy arrays, filled in place by :meth:`ReplayBuffer.sample`.

    Wrap the arrays with ``torch.from_numpy`` (no copy) and pass the batch back as ``out=`` to
    sample into the same memory again.
    """

    obs: np.ndarray
    """Stacked observations before the action, ``[B, frame_stack, *obs_shape]`` of the buffer's dtype."""
    next_obs: np.ndarray
    """Stacked observations to bootstrap from, ``n`` steps later (or the episode's final observation)."""
    action: np.ndarray
    """int64 ``[B]``: the action taken at ``obs``."""
    reward: np.ndarray
    """float32 ``[B]``: discounted sum of up to ``n_step`` rewards, ``sum_t gamma^t r_t``."""
    done: np.ndarray
    """bool ``[B]``: the episode terminated within the n steps (truncation is not termination)."""
    discount: np.ndarray
    """float32 ``[B]``: ``gamma^k`` to multiply the bootstrap value by (k steps summed), 0 when ``done``."""
    was_default: np.ndarray
    """bool ``[B]``: the environment applied the default action because no fresh one was ready."""
    delay: np.ndarray
    """int32 ``[B]``: steps between the observation the action was computed from and the one it acted on."""
    index: np.ndarray
    """int64 ``[B]``: a stable id of each transition: ``position * streams + stream`` (pass it to
    :meth:`ReplayBuffer.update_priorities`)."""
    weight: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(0, np.float32))
    """float32 ``[B]``: importance-sampling weight of each transition (prioritized buffers: ``(N * P(i))**-beta``
    divided by the batch's largest; uniform buffers: 1)."""
    action_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """int64 ``[B, K + 1]`` (buffers with ``action_history=K > 0``; ``[B, 0]`` otherwise): the actions
    applied before ``obs`` (oldest first) and the pending slot, :data:`NO_ACTION` where there is none
    (see :meth:`ReplayBuffer.sample`)."""
    next_action_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """int64 ``[B, K + 1]``: the same for ``next_obs`` (the bootstrap target's input)."""

    @property
    def batch_size(self) -> int:
        """Transitions in the batch."""
        return int(self.action.shape[0])

    def __len__(self) -> int:
        return self.batch_size


def _obs_dtype(obs_dtype: npt.DTypeLike) -> np.dtype:
    dt = as_dtype("obs_dtype", obs_dtype)
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise ValueError(f"obs_dtype must be a bool, integer or floating numpy dtype, got {dt}")
    if not dt.isnative:
        raise ValueError(f"obs_dtype must be in native byte order, got {dt.str}")
    return dt


class ReplayBuffer(SharedObject):
    """A lock-free replay buffer in POSIX shared memory, shared by writer and sampler processes.

    Args:
        capacity: total slots (frames) across all streams; each stream gets ``capacity // streams``.
            An episode end takes one extra slot (its final observation).
        obs_shape: shape of one observation frame (``(84, 84)`` for Atari, ``(8,)`` for a vector).
        obs_dtype: numpy dtype of observations (bool, integer or float).
        frame_stack: frames per sampled observation stack (1 = no stacking).
        streams: independent environment streams, each with one writer at a time.
        n_step: steps summed into each sampled reward (1..255).
        gamma: discount of the n-step return, in [0, 1].
        name: shared-memory segment name (default: a fresh ``rtcore-replay-...`` name).
        prioritized: draw transitions in proportion to ``priority**alpha`` (see the module docstring).
        alpha: priority exponent in [0, 1] (0 = uniform); shared by every process.
        beta: default importance-sampling exponent in [0, 1] for :meth:`sample` (each handle may
            change its own with the :attr:`beta` setter or per call).
        action_history: K, the actions :meth:`sample` gathers before each stack (0: none; at most
            1024); see :meth:`sample`. Each stream then needs ``max(frame_stack, K + 1) + n_step + 1`` slots.

    The creating process owns the segment and unlinks it on :meth:`close`, garbage collection or exit.
    Other processes use :meth:`attach`; the object pickles as its name.
    """

    _KIND = "replay"
    _CORE = _core.Replay

    def __init__(
        self,
        capacity: int,
        obs_shape: int | Sequence[int],
        obs_dtype: npt.DTypeLike = "uint8",
        frame_stack: int = 1,
        streams: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        name: str | None = None,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        action_history: int = 0,
    ) -> None:
        capacity = at_least("capacity", capacity, 1)
        if capacity > INT64_MAX:
            raise ValueError(f"capacity must be below 2**63 (and its memory must fit), got {capacity}")
        shape = as_shape("obs_shape", obs_shape, lo=1)
        dtype = _obs_dtype(obs_dtype)
        frame_stack = at_least("frame_stack", frame_stack, 1)
        streams = at_least("streams", streams, 1)
        n_step = at_least("n_step", n_step, 1)
        gamma = _unit("gamma", gamma)
        if not isinstance(prioritized, (bool, np.bool_)):
            raise TypeError(f"prioritized must be a bool, got {prioritized!r}")
        alpha = _unit("alpha", alpha)
        beta = _unit("beta", beta)
        action_history = in_range("action_history", action_history, 0, 1024)
        if streams > 2**31 or frame_stack > 2**31 or n_step > 2**31:
            raise ValueError("streams, frame_stack and n_step must be below 2**31")
        name = self._new_name(name)
        handle = self._CORE.create(name, capacity, list(shape), dtype, frame_stack, streams, n_step, gamma,
                                   bool(prioritized), alpha, beta, action_history)
        self._adopt(handle, name, owner=True)

    def _from_handle(self, handle: Any) -> None:
        self._obs_shape = tuple(handle.obs_shape)
        self._dtype = np.dtype(handle.dtype)
        self._capacity = int(handle.capacity)
        self._frame_stack = int(handle.frame_stack)
        self._streams = int(handle.streams)
        self._n_step = int(handle.n_step)
        self._gamma = float(handle.gamma)
        self._add = handle.add  # bound once: add() is the per-step hot path
        self._add_many = handle.add_many
        self._action_history = int(handle.action_history)
        self._pool = _BatchPool(self._frame_stack, self._obs_shape, self._dtype, self._action_history)
        self._no_starts = np.zeros(self._streams, np.bool_)  # add_batch's default episode_start (read only)
        self._prioritized = bool(handle.prioritized)
        self._alpha = float(handle.alpha)
        self._beta = float(handle.beta)

    # --- read-only layout -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Total slots, as requested (each stream holds ``capacity // streams``)."""
        return self._capacity

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation frame."""
        return self._obs_shape

    @property
    def obs_dtype(self) -> np.dtype:
        """numpy dtype of observations."""
        return self._dtype

    @property
    def frame_stack(self) -> int:
        """Frames per sampled observation stack."""
        return self._frame_stack

    @property
    def action_history(self) -> int:
        """K: actions gathered before each sampled stack (0: none). See :meth:`sample`."""
        return self._action_history

    @property
    def streams(self) -> int:
        """Independent environment streams (one writer each at a time)."""
        return self._streams

    @property
    def n_step(self) -> int:
        """Steps summed into each sampled reward."""
        return self._n_step

    @property
    def gamma(self) -> float:
        """Discount of the n-step return."""
        return self._gamma

    @property
    def prioritized(self) -> bool:
        """Transitions are drawn in proportion to ``priority**alpha``."""
        return self._prioritized

    @property
    def alpha(self) -> float:
        """Priority exponent (shared by every process; fixed at creation)."""
        return self._alpha

    @property
    def beta(self) -> float:
        """This handle's default importance-sampling exponent, in [0, 1] (settable, e.g. annealed)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = _unit("beta", value)

    @property
    def max_priority(self) -> float:
        """The priority new transitions enter with: the largest given so far (1.0 before any).

        Stored as ``priority**alpha`` in fixed point, so this is that value raised to ``1/alpha``
        (1.0 when ``alpha`` is 0)."""
        v = float(self._h.max_priority_value())
        return v ** (1.0 / self._alpha) if self._alpha > 0 else 1.0

    @property
    def nbytes(self) -> int:
        """Size of the shared-memory segment in bytes."""
        return int(self._h.segment_bytes)

    def __len__(self) -> int:
        """Transitions sampleable now (exact when no writer is running)."""
        return int(self._h.size())

    def head(self, stream: int) -> int:
        """Slots written so far on ``stream`` (steps plus one per finished episode)."""
        return int(self._h.head(self._stream(stream)))

    def _stream(self, stream: Any) -> int:
        s = index("stream", stream)
        if not 0 <= s < self._streams:
            raise IndexError(f"stream {s} is out of range for a buffer with {self._streams} stream(s)")
        return s

    # --- writing ----------------------------------------------------------------------------------

    def add(
        self,
        stream: int,
        obs: np.ndarray,
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: np.ndarray | None = None,
        was_default: bool = False,
        delay: int = 0,
        episode_start: bool = False,
    ) -> None:
        """Append one step to ``stream``.

        ``obs`` is the observation the action was taken at (``obs_shape``, the buffer's dtype,
        C-contiguous); the step's next observation is the next ``add``'s ``obs`` on this stream. At an
        episode end (``terminated`` or ``truncated``) pass the final observation as ``next_obs``; the
        next ``add`` on the stream starts a new episode. ``was_default`` marks a step where the
        environment applied the default action; ``delay`` is the action's age in steps (``>= 0``).
        ``action`` must be ``>= 0`` and ``reward`` finite (a NaN would spread into every n-step return).

        Episodes never join. ``episode_start=True`` starts a new episode here even though the last one
        did not end (an env reset without a final observation, a restarted env); and a writer in
        another process than the one that wrote the stream's open episode (a restarted driver, after
        the old one died) always starts a new one. The open episode is then closed as truncated: its
        last step, whose next observation was never given, is dropped, and the step before it
        bootstraps from the last observation written. One writer per stream at a time.
        """
        try:
            self._add(stream, obs, action, reward, terminated, truncated, next_obs, was_default, delay, episode_start)
        except TypeError as e:  # a wrong type or an int out of C range: say which argument (off the hot path)
            self._check_add_types(stream, obs, action, reward, terminated, truncated, next_obs, was_default, delay,
                                  episode_start)
            raise clean_type_error(e, "ReplayBuffer.add") from None

    def _check_add_types(self, stream, obs, action, reward, terminated, truncated, next_obs, was_default, delay,
                         episode_start) -> None:
        self._stream(stream)
        for what, a in (("obs", obs), ("next_obs", next_obs)):
            if not (a is None and what == "next_obs") and not isinstance(a, np.ndarray):
                raise TypeError(f"{what} must be a numpy array of shape {self._obs_shape} and dtype {self._dtype}, "
                                f"got {type(a).__name__}")
        in_range("action", action, 0, INT64_MAX)
        if isinstance(reward, bool) or not isinstance(reward, (int, float, np.integer, np.floating)):
            raise TypeError(f"reward must be a float, got {type(reward).__name__}")
        for what, b in (("terminated", terminated), ("truncated", truncated), ("was_default", was_default),
                        ("episode_start", episode_start)):
            as_bool(what, b)
        in_range("delay", delay, 0, 2**31 - 1)

    def add_many(
        self,
        stream: int,
        obs: np.ndarray,
        action: npt.ArrayLike,
        reward: npt.ArrayLike,
        terminated: npt.ArrayLike,
        truncated: npt.ArrayLike,
        next_obs: np.ndarray | None = None,
        was_default: npt.ArrayLike | None = None,
        delay: npt.ArrayLike | None = None,
        episode_start: npt.ArrayLike | None = None,
    ) -> None:
        """Append ``k`` consecutive steps to ``stream`` in one call: the same as ``k`` calls of
        :meth:`add` with row ``i`` of each argument, in order, but one crossing into C++ (one GIL
        release, one loop), for writers that have several steps at once.

        ``obs`` is ``[k, *obs_shape]`` of the buffer's dtype, C-contiguous; ``action``, ``reward``,
        ``terminated``, ``truncated`` and the optional ``was_default`` (default all False) and ``delay``
        (default all 0) and ``episode_start`` (default all False: see :meth:`add`) have one entry per step (integer actions and delays, numeric rewards, bool
        flags; other dtypes of the right kind are converted). Episodes may end anywhere in the ``k``
        steps: ``next_obs`` (``[k, *obs_shape]``, only the rows of ending steps are read) is then
        required, and the step after an end starts a new episode. Every argument is checked before
        anything is written, so a bad one raises ``ValueError`` and writes nothing. Wait-free; the
        steps become sampleable together when the call returns (samplers never see a torn one), and a
        writer killed mid-call loses that call's steps, as a killed :meth:`add` loses its step. A
        stream's slots are written exactly as ``k`` adds would write them.
        """
        self._add_many(stream, obs, action, reward, terminated, truncated, next_obs, was_default, delay, episode_start)

    def add_batch(
        self,
        obs: np.ndarray,
        action: npt.ArrayLike,
        reward: npt.ArrayLike,
        terminated: npt.ArrayLike,
        truncated: npt.ArrayLike,
        next_obs: np.ndarray | None = None,
        was_default: npt.ArrayLike | None = None,
        delay: npt.ArrayLike | None = None,
        episode_start: npt.ArrayLike | None = None,
    ) -> None:
        """Append one step to every stream at once (a vectorised env): row ``i`` goes to stream ``i``.

        ``obs`` is ``[streams, *obs_shape]``; the other arguments have one entry per stream.
        ``next_obs`` (same shape as ``obs``) is required if any stream ends its episode; only the
        rows of ending streams are read. ``episode_start`` as in :meth:`add`, per stream. Every row is
        checked before any is written.
        """
        n = self._streams
        if not isinstance(obs, np.ndarray):
            raise TypeError(f"obs must be a numpy array of shape {(n, *self._obs_shape)}, got {type(obs).__name__}")
        if next_obs is not None and not isinstance(next_obs, np.ndarray):
            raise TypeError(f"next_obs must be a numpy array or None, got {type(next_obs).__name__}")
        action = _vector("action", action, n, np.int64, "iu", lo=0)
        reward = _vector("reward", reward, n, np.float32, "iuf")
        terminated = _vector("terminated", terminated, n, np.bool_, "b")
        truncated = _vector("truncated", truncated, n, np.bool_, "b")
        was_default = np.zeros(n, np.bool_) if was_default is None else _vector("was_default", was_default, n, np.bool_, "b")
        delay = np.zeros(n, np.int32) if delay is None else _vector("delay", delay, n, np.int32, "iu", lo=0)
        starts = (self._no_starts if episode_start is None
                  else _vector("episode_start", episode_start, n, np.bool_, "b"))
        self._h.add_batch(obs, action, reward, terminated, truncated, next_obs, was_default, delay, starts)

    # --- sampling ---------------------------------------------------------------------------------

    def empty_batch(self, batch_size: int) -> ReplayBatch:
        """Zeroed arrays of the right shapes and dtypes, to pass to :meth:`sample` as ``out=``."""
        b = self._batch_size(batch_size)
        stack = (b, self._frame_stack, *self._obs_shape)
        return ReplayBatch(
            obs=np.zeros(stack, self._dtype),
            next_obs=np.zeros(stack, self._dtype),
            action=np.zeros(b, np.int64),
            reward=np.zeros(b, np.float32),
            done=np.zeros(b, np.bool_),
            discount=np.zeros(b, np.float32),
            was_default=np.zeros(b, np.bool_),
            delay=np.zeros(b, np.int32),
            index=np.zeros(b, np.int64),
            weight=np.ones(b, np.float32),
            action_history=np.zeros((b, self._hist_width), np.int64),
            next_action_history=np.zeros((b, self._hist_width), np.int64),
        )

    @property
    def _hist_width(self) -> int:
        return self._action_history + 1 if self._action_history else 0

    def sample(self, batch_size: int, out: ReplayBatch | None = None, beta: float | None = None,
               learn_on: str = "applied") -> ReplayBatch:
        """Draw ``batch_size`` transitions (with replacement) from all streams: uniformly, or in
        proportion to ``priority**alpha`` for a prioritized buffer, whose ``out.weight`` receives the
        importance weights for exponent ``beta`` (default: this handle's :attr:`beta`).

        Fills ``out`` in place when given. Without ``out``, the batch is drawn into memory this handle
        recycles (so no call after the first few faults fresh pages in, and both ways run at the same
        speed). Lifetime rule: the returned batch is yours for as long as you reference it, its
        arrays, a view of one, or a tensor made from one with ``torch.from_numpy``; the handle reuses
        a batch's memory only once none of these is alive. (Only a raw address taken from an array,
        e.g. ``ctypes`` or ``data_ptr()``, does not keep it: hold the batch while you use one.) A loop
        that keeps the previous batch while drawing the next cycles between two buffers; a handle
        keeps at most a few per batch size and allocates fresh ones beyond that.

        The GIL is released while transitions are selected and copied. Raises ``ValueError`` if fewer
        than ``batch_size`` transitions are sampleable, ``rtcore.BusyError`` if another thread is
        sampling through this handle (attach one handle per thread).

        ``learn_on`` picks which observation a transition pairs with its action: ``"applied"`` (the
        stack ending at the step the action was applied) or ``"acted"`` (the stack ending ``delay``
        steps earlier, the one the action was computed from; ``next_obs`` ends ``delay`` steps before
        the bootstrap step, as a delayed-observation env would show it). Stacks never reach back
        before their episode's first frame. Both read frames already in the ring: no copy is kept.

        Action history (a buffer made with ``action_history=K``): ``out.action_history`` gets, for the
        stack ``obs`` (newest frame at env position ``u``), K + 1 entries: the actions applied at
        positions ``u-K .. u-1`` (those that led to frames ``u-K+1 .. u``, oldest first; an action
        applied as the default counts as applied), then the *pending* slot: the action applied at ``u``
        when it is a posted (not default) action and ``u`` is before the transition's own step, i.e.
        the action already on its way when ``u`` was observed (always :data:`NO_ACTION` with
        ``learn_on="applied"`` or a delay of 0). Slots before the episode start are :data:`NO_ACTION`.
        ``out.next_action_history`` is the same for ``next_obs``, whose own step is the bootstrap step
        ``j + k``. This is the definition the inference workers use at act time
        (:meth:`rtcore.ObsBoard.read` with ``history=``): the same values, except that the pending slot
        a worker saw can differ when a newer post superseded it before the env applied it.
        """
        if learn_on not in ("applied", "acted"):
            raise ValueError(f"learn_on must be 'applied' or 'acted', got {learn_on!r}")
        b = self._batch_size(batch_size)
        if out is None:
            out = self._pool.take(b)
        elif not isinstance(out, ReplayBatch):
            raise TypeError(f"out must be a ReplayBatch (see empty_batch()), got {type(out).__name__}")
        elif out.action.shape != (b,):
            raise ValueError(f"out holds a batch of {out.action.shape}, expected ({b},) for batch_size={b}")
        acted = learn_on == "acted"
        hist = (out.action_history, out.next_action_history) if self._action_history else (None, None)
        if self._prioritized:
            b_exp = self._beta if beta is None else _unit("beta", beta)
            self._h.sample(out.obs, out.next_obs, out.action, out.reward, out.done, out.discount, out.was_default,
                           out.delay, out.index, out.weight, b_exp, acted, *hist)
        else:
            if beta is not None:
                raise ValueError("beta applies to prioritized buffers only (this one was created with prioritized=False)")
            self._h.sample(out.obs, out.next_obs, out.action, out.reward, out.done, out.discount, out.was_default,
                           out.delay, out.index, None, 0.0, acted, *hist)
        return out

    def _batch_size(self, batch_size: Any) -> int:
        # A batch larger than the capacity can never be sampled (sample needs that many transitions).
        b = at_least("batch_size", batch_size, 1)
        if b > self._capacity:
            raise ValueError(f"batch_size must be <= capacity ({self._capacity}): sample needs that many transitions, got {b}")
        return b

    def update_priorities(self, index: npt.ArrayLike, priority: npt.ArrayLike) -> int:
        """Set the priorities of sampled transitions (``index`` from :attr:`ReplayBatch.index`), e.g.
        ``abs(td_error) + eps``. Callable from any process, concurrently with writers and samplers.

        Priorities must be finite and >= 0 (0: never drawn again until updated); values above the
        storable maximum (``p**alpha`` of about 65536) are clamped. The new largest priority becomes
        the entry priority of new transitions. A transition overwritten since it was sampled keeps
        its successor's priority: its update is skipped. Returns how many updates were applied.
        Raises ``IndexError`` for an index of a position never written, ``ValueError`` for a bad
        priority; then no update is applied.
        """
        if not self._prioritized:
            raise ValueError("update_priorities needs a prioritized buffer (create it with prioritized=True)")
        idx = index if type(index) is np.ndarray else np.asarray(index)
        pri = priority if type(priority) is np.ndarray else np.asarray(priority)
        # Fast path: what a learner passes (batch.index and a float64 array); values are checked in C++.
        if not (idx.dtype == np.int64 and pri.dtype == np.float64 and idx.ndim == 1 and pri.shape == idx.shape):
            if idx.ndim != 1:
                raise ValueError(f"index must be one-dimensional, got shape {idx.shape}")
            if idx.dtype.kind not in "iu":
                raise ValueError(f"index has dtype {idx.dtype}, expected an integer dtype")
            if pri.shape != idx.shape:
                raise ValueError(f"priority has shape {pri.shape}, expected {idx.shape} (one per index)")
            if pri.dtype.kind not in "iuf":
                raise ValueError(f"priority has dtype {pri.dtype}, expected a float dtype")
            if idx.dtype.kind == "u" and idx.size and int(idx.max()) >= 2**63:
                raise IndexError(f"index {int(idx.max())} is out of range")
            idx = idx.astype(np.int64)
            pri = pri.astype(np.float64)
        return int(self._h.update_priorities(np.ascontiguousarray(idx), np.ascontiguousarray(pri)))

    def priority(self, index: int) -> float | None:
        """The stored priority of transition ``index`` (``p**alpha`` rounded to the tree's fixed point,
        raised back to ``1/alpha``), or None if it has been overwritten."""
        if not self._prioritized:
            raise ValueError("priority needs a prioritized buffer (create it with prioritized=True)")
        v = float(self._h.priority_value(_as_index(index)))
        if v < 0:
            return None
        return v ** (1.0 / self._alpha) if self._alpha > 0 else 1.0

    def seed(self, seed: int) -> None:
        """Seed this handle's sampler. With one process and no concurrent writer, the draws of a
        seeded handle are reproducible."""
        self._h.seed(index("seed", seed) % 2**64)

    def __repr__(self) -> str:
        if self.closed:
            return f"ReplayBuffer(name={self._name!r}, closed)"
        return (
            f"ReplayBuffer(name={self._name!r}, capacity={self._capacity}, obs_shape={self._obs_shape}, "
            f"obs_dtype={self._dtype}, frame_stack={self._frame_stack}, streams={self._streams}, "
            f"n_step={self._n_step}, gamma={self._gamma}, len={len(self)}"
            + (f", action_history={self._action_history}" if self._action_history else "")
            + (f", prioritized=True, alpha={self._alpha}, beta={self._beta})" if self._prioritized else ")")
        )


def _held(entries: list[tuple[np.ndarray, tuple[np.ndarray, ...]]], i: int) -> int:
    """Sum of the reference counts of a pooled buffer and its arrays (see _BatchPool)."""
    raw, arrays = entries[i]
    return sys.getrefcount(raw) + sum(map(sys.getrefcount, arrays))


class _BatchPool:
    """Recycled, pre-faulted memory for :meth:`ReplayBuffer.sample` without ``out=``.

    Fresh numpy arrays for every batch would map and fault in their pages on every call (1.8 MB for a
    batch of 32 stacks of 4 84x84 frames), which cost ~8x the sample itself. Each pooled buffer is one
    uint8 array carved into the twelve arrays of a batch (views made once, 64-byte aligned). The base of
    each array, of any view of one (numpy collapses view chains) and of a tensor made from one
    (``torch.from_numpy`` holds the array) is that buffer, so the reference counts of the buffer and of
    its arrays are back to what the pool alone holds exactly when nothing of a batch drawn into it is
    alive: then it is reused. Each entry's free count is taken right after it is made, through the
    same helper that checks it, so the interpreter's own temporaries count the same both times.
    """

    MAX_PER_SIZE = 4  # buffers kept per batch size; a caller holding more batches gets fresh ones
    MAX_SIZES = 4  # batch sizes kept (the oldest size's buffers are dropped first)

    def __init__(self, frame_stack: int, obs_shape: tuple[int, ...], dtype: np.dtype, action_history: int = 0) -> None:
        self._stack_shape = (frame_stack, *obs_shape)
        self._hist = action_history + 1 if action_history else 0
        self._dtype = dtype
        # batch size -> (entries [(buffer, arrays)], the free count of each entry)
        self._pools: dict[int, tuple[list[tuple[np.ndarray, tuple[np.ndarray, ...]]], list[int]]] = {}
        self._lock = threading.Lock()  # two threads sampling one handle must not get the same buffer

    def take(self, b: int) -> ReplayBatch:
        with self._lock:
            pool = self._pools.get(b)
            if pool is None:
                if len(self._pools) >= self.MAX_SIZES:
                    del self._pools[next(iter(self._pools))]
                pool = self._pools[b] = ([], [])
            entries, free = pool
            for i in range(len(entries)):
                if _held(entries, i) == free[i]:
                    return ReplayBatch(*entries[i][1])
            entry = self._make(b)
            if len(entries) >= self.MAX_PER_SIZE:
                return ReplayBatch(*entry[1])  # all kept buffers are in use: a fresh one, not kept
            entries.append(entry)
            del entry
            free.append(_held(entries, len(entries) - 1))
            return ReplayBatch(*entries[-1][1])

    def _make(self, b: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        fields: list[tuple[tuple[int, ...], np.dtype]] = [
            ((b, *self._stack_shape), self._dtype),  # obs
            ((b, *self._stack_shape), self._dtype),  # next_obs
            ((b,), np.dtype(np.int64)),  # action
            ((b,), np.dtype(np.float32)),  # reward
            ((b,), np.dtype(np.bool_)),  # done
            ((b,), np.dtype(np.float32)),  # discount
            ((b,), np.dtype(np.bool_)),  # was_default
            ((b,), np.dtype(np.int32)),  # delay
            ((b,), np.dtype(np.int64)),  # index
            ((b,), np.dtype(np.float32)),  # weight (ones unless a prioritized sample fills it)
            ((b, self._hist), np.dtype(np.int64)),  # action_history
            ((b, self._hist), np.dtype(np.int64)),  # next_action_history
        ]
        offsets, nbytes = [], 0
        for shape, dt in fields:
            offsets.append(nbytes)
            nbytes += -(-int(np.prod(shape)) * dt.itemsize // 64) * 64
        raw = np.empty(nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        raw.fill(0)  # fault the pages in now, once
        arrays = tuple(np.ndarray(shape, dt, raw, start + off) for off, (shape, dt) in zip(offsets, fields))
        arrays[9].fill(1.0)  # weight, as empty_batch() makes it
        return raw, arrays


def _unit(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a float, got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {v}")
    return v


def _as_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"index must be an int, got {value!r}")
    if int(value) < 0:
        raise IndexError(f"index {int(value)} is negative")
    return int(value)


def _vector(what: str, value: npt.ArrayLike, n: int, dtype: type, kinds: str, lo: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as e:  # a ragged list, an object numpy cannot read
        raise TypeError(f"{what} must be an array of {n} values, got {type(value).__name__}: {e}") from None
    if a.dtype.kind not in kinds:
        raise ValueError(f"{what} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if a.shape != (n,):
        raise ValueError(f"{what} has shape {a.shape}, expected ({n},) (one entry per stream)")
    target = np.dtype(dtype)
    if a.dtype.kind in "iu" and target.kind == "i":  # a cast must not wrap (a uint64 above 2**63 to a negative)
        info = np.iinfo(target)
        low = info.min if lo is None else lo
        if a.size and (int(a.min()) < low or int(a.max()) > info.max):
            raise ValueError(f"{what} must be in [{low}, {info.max}], got values in [{int(a.min())}, {int(a.max())}]")
    if target.kind == "f":
        with np.errstate(all="ignore"):
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"{what} must be finite, got {a[~np.isfinite(a)][0]!r}")
            if a.size and np.abs(a.astype(np.float64)).max() > np.finfo(target).max:
                raise ValueError(f"{what} must fit {target} (|x| <= {np.finfo(target).max:.3g})")
    return np.ascontiguousarray(a, dtype=dtype)
