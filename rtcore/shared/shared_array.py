"""A numpy array in shared memory, for counters and statistics that several processes keep together.

``SharedArray(shape, dtype)`` creates a zeroed segment; ``SharedArray.attach(name)`` (or unpickling in a
``spawn``-ed process) maps the same memory, with its shape and dtype read from the segment header.
``.array`` is a numpy view of the segment; the view keeps the mapping alive even after ``close()``.

There is no locking: numpy operations on the view are plain loads and stores. Give each element one
writing process (e.g. one row per worker) and readers see each aligned element of up to 8 bytes whole;
a read-modify-write such as ``a[0] += 1`` from two processes at once can lose updates.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rtcore import _core
from rtcore._validate import as_dtype, as_shape
from rtcore.shared._shm import SharedObject

__all__ = ["SharedArray"]


class SharedArray(SharedObject):
    """A zero-initialised numpy array of ``shape`` and ``dtype`` in its own shared-memory segment.

    Args:
        shape: array shape (an int or a tuple of non-negative ints, at most 8 dimensions).
        dtype: a numeric or bool numpy dtype.
        name: segment name (default: a fresh ``rtcore-array-...``).
    """

    _KIND = "array"
    _CORE = _core.SharedArray

    def __init__(self, shape: Sequence[int] | int, dtype: Any = "float64", name: str | None = None) -> None:
        shp = as_shape("shape", shape, lo=0)
        dt = as_dtype("dtype", dtype)
        name = self._new_name(name)
        self._adopt(self._CORE.create(name, list(shp), dt), name, owner=True)

    def _from_handle(self, handle: Any) -> None:
        self._array = handle.array()

    @property
    def array(self) -> np.ndarray:
        """The numpy view of the shared memory (the same object each time)."""
        self._h  # noqa: B018 -- raises if closed
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`array`."""
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        """dtype of :attr:`array`."""
        return self._array.dtype

    def close(self) -> None:
        """Detach (the creator also unlinks the name). Views handed out earlier stay valid."""
        self._array = None  # type: ignore[assignment]
        super().close()
