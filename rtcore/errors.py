"""Exceptions raised by rtcore beyond the built-in ones.

A bad argument or option is a built-in exception: ``ValueError`` (a bad value), ``TypeError`` (a
value of the wrong kind), ``IndexError`` (a stream, worker or buffer index out of range),
``FileNotFoundError`` (a missing segment or file). ``TimeoutError``: a blocking call ran past its
timeout. The classes here say what happened where no built-in one does:

``LayoutError`` (a ``ValueError``)
    A shared-memory segment exists but holds another structure or another layout version.
``StateError`` (a ``RuntimeError``)
    The object's runtime state forbids the call; the arguments may be fine. Its subclasses:

    ``ClosedError``
        The object was closed (any method of a closed ``ReplayBuffer``, ``ObsBoard``,
        ``ActionBoard``, ``StaggerSchedule``, ``Turnstile``, ``ParamStore``, ``SharedArray``).
    ``SlotError``
        A slot is taken by a live holder (``StaggerSchedule.join``/``Turnstile.join`` of a taken
        slot or with every slot taken; ``ActionBoard.post`` with a worker id another live process is
        posting with; a ``ParamStore`` with every reader slot held), or the caller no longer holds
        its slot: a worker dropped from the schedule or a learner from the turnstile and replaced,
        a learner that lost its turn or passes a turn it does not hold, a call before ``join``.
    ``BusyError``
        The handle is in use by another thread or call: two threads sampling one ``ReplayBuffer``
        handle, two threads waiting on one ``Timer``, two threads posting with one ``ActionBoard``
        worker id, a second ``ParamStore.pin`` before ``unpin``.

All of them come from one place in the C++ core (``csrc/common/errors.h``, mapped in
``csrc/bindings/bind_errors.cpp``); the Python faces raise the same classes.
"""

from rtcore._core import BusyError, ClosedError, LayoutError, SlotError, StateError

__all__ = ["BusyError", "ClosedError", "LayoutError", "SlotError", "StateError"]

LayoutError.__doc__ = (
    "A shared-memory segment exists but holds another structure or another layout version "
    "(a subclass of ValueError)."
)
StateError.__doc__ = "The object's runtime state forbids this call (a subclass of RuntimeError)."
ClosedError.__doc__ = "The object was closed (a subclass of StateError)."
SlotError.__doc__ = (
    "A slot is taken by a live holder, or the caller no longer holds its slot: dropped from the schedule "
    "or turnstile, lost its turn, not joined (a subclass of StateError)."
)
BusyError.__doc__ = "The handle is in use by another thread or call (a subclass of StateError)."
