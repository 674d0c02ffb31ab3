"""Exceptions raised by rtcore beyond the built-in ones.

rtcore raises built-in exceptions where one fits (``ValueError`` for a bad argument, ``IndexError``
for an out-of-range stream or worker, ``FileNotFoundError`` for a missing segment,
``TimeoutError`` for a blocking call that ran past its timeout) and these where none does.
"""

from rtcore._core import LayoutError

__all__ = ["LayoutError", "WorkerDied"]

LayoutError.__doc__ = (
    "A shared-memory segment exists but holds another structure or another layout version "
    "(a subclass of ValueError)."
)


class WorkerDied(RuntimeError):
    """A child process (env driver, inference worker, learner) ended unexpectedly; the message says why."""
