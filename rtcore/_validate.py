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

__all__ = [
    "index", "at_least", "in_range", "seconds", "ns", "timeout_ns", "as_shape", "as_dtype", "as_name", "as_bool",
    "clean_type_error", "INT64_MAX", "MAX_SECONDS", "FOREVER_SECONDS", "OPTION_ERRORS", "bad_option",
]

INT64_MAX = 2**63 - 1
# Durations (inference times, periods, heartbeats, spins) the core takes as int64 nanoseconds and does
# arithmetic on (a tau times a worker count): 1e6 s (11.6 days) leaves that arithmetic far from overflow.
MAX_SECONDS = 1e6
# A timeout longer than this (about 31.7 years) waits forever, as the core's waits do.
FOREVER_SECONDS = 1e9

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


def seconds(what: str, value: Any, *, positive: bool, hi: float | None = None) -> float:
    """A finite duration in seconds as a float: ``> 0`` if ``positive``, else ``>= 0``; ``<= hi`` if given."""
    t = type(value)
    if t is not float and t is not int and (t is bool or not isinstance(value, numbers.Real)):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{what} must be at most {hi:g} seconds, got {value!r}")
    return v


def ns(s: float) -> int:
    """``s`` seconds as integer nanoseconds, rounded to nearest."""
    return int(round(s * 1e9))


def timeout_ns(timeout: Any) -> int:
    """A ``timeout`` in seconds (``None``: wait forever) as the nanoseconds the C++ waits take (-1: forever).

    A timeout longer than :data:`FOREVER_SECONDS` waits forever; NaN, infinite and negative ones are refused."""
    if timeout is None:
        return -1
    t = seconds("timeout", timeout, positive=False)
    return -1 if t > FOREVER_SECONDS else ns(t)


def as_name(what: str, value: Any) -> str:
    """A segment name must be a ``str`` (the core checks its characters)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def as_bool(what: str, value: Any) -> bool:
    """``bool`` or numpy ``bool_`` (not an int or any other truthy object)."""
    if value is True or value is False or isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{what} must be a bool, got {type(value).__name__}")


def clean_type_error(e: TypeError, call: str) -> TypeError:
    """The error to raise for a ``TypeError`` from a ``_core`` call: pybind11's "incompatible function
    arguments" dump becomes one line naming the call (callers first diagnose the argument themselves,
    this is the fallback); any other ``TypeError`` is returned as it is."""
    if "incompatible function arguments" in str(e):
        return TypeError(f"{call}: an argument has the wrong type or is out of range (see its docstring)")
    return e


def as_shape(what: str, value: Any, *, lo: int) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple, every size ``>= lo`` (0 or 1)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} must be a tuple of ints or an int, got {value!r}")
    try:
        shp = tuple(operator.index(d) for d in value)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of ints or an int, got {value!r}") from None
    if any(d < lo for d in shp):
        raise ValueError(f"{what} must have {'non-negative' if lo == 0 else 'positive'} sizes, got {shp}")
    if any(d > INT64_MAX for d in shp):
        raise ValueError(f"{what} has a size above 2**63 - 1: {shp}")
    if len(shp) > 8:
        raise ValueError(f"{what} has {len(shp)} dimensions, at most 8 are supported")
    return shp


def as_dtype(what: str, value: Any) -> np.dtype:
    """``np.dtype(value)``, with a ``TypeError`` naming ``what`` when numpy does not know it."""
    try:
        return np.dtype(value)
    except Exception as e:  # numpy raises TypeError, ValueError or others for what it does not parse
        raise TypeError(f"{what} {value!r} is not a numpy dtype: {e}") from None
