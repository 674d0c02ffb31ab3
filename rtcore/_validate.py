"""Argument checks shared by the public wrappers, so the same mistake gets the same message everywhere.

Each check returns the converted value or raises ``TypeError`` (wrong kind of value) or ``ValueError``
(right kind, out of range) with a message that names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

__all__ = ["index", "at_least", "in_range", "seconds", "ns", "timeout_ns", "as_shape", "as_dtype", "OPTION_ERRORS",
           "bad_option"]

# What a command's option checks raise for a bad option. A command catches these around its option
# checks only (never around the work itself) and passes them to bad_option.
OPTION_ERRORS = (ValueError, TypeError, FileNotFoundError)


def bad_option(prog: str, exc: BaseException) -> int:
    """Prints ``<prog>: error: <exc>`` on one line to stderr (as argparse does) and returns exit code 2."""
    import sys

    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def index(what: str, value: Any) -> int:
    """``value`` as a Python int (anything with ``__index__`` except ``bool``)."""
    if type(value) is int:  # the per-call hot path (worker ids, steps): no conversion
        return value
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None


def at_least(what: str, value: Any, lo: int) -> int:
    """:func:`index`, then ``ValueError`` unless ``value >= lo``."""
    v = index(what, value)
    if v < lo:
        raise ValueError(f"{what} must be >= {lo}, got {v}")
    return v


def in_range(what: str, value: Any, lo: int, hi: int) -> int:
    """:func:`index`, then ``ValueError`` unless ``lo <= value <= hi``."""
    v = index(what, value)
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be in [{lo}, {hi}], got {v}")
    return v


def seconds(what: str, value: Any, *, positive: bool) -> float:
    """A finite duration in seconds as a float: ``> 0`` if ``positive``, else ``>= 0``."""
    t = type(value)
    if t is not float and t is not int and (t is bool or not isinstance(value, numbers.Real)):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")
    return v


def ns(s: float) -> int:
    """``s`` seconds as integer nanoseconds, rounded to nearest."""
    return int(round(s * 1e9))


def timeout_ns(timeout: Any) -> int:
    """A ``timeout`` in seconds (``None``: wait forever) as the nanoseconds the C++ waits take (-1: forever)."""
    if timeout is None:
        return -1
    return ns(seconds("timeout", timeout, positive=False))


def as_shape(what: str, value: Any, *, lo: int) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple, every size ``>= lo`` (0 or 1)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        shp = tuple(operator.index(d) for d in value)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of ints or an int, got {value!r}") from None
    if any(d < lo for d in shp):
        raise ValueError(f"{what} must have {'non-negative' if lo == 0 else 'positive'} sizes, got {shp}")
    return shp


def as_dtype(what: str, value: Any) -> np.dtype:
    """``np.dtype(value)``, with a ``TypeError`` naming ``what`` when numpy does not know it."""
    try:
        return np.dtype(value)
    except TypeError as e:
        raise TypeError(f"{what} {value!r} is not a numpy dtype: {e}") from None
