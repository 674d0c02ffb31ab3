# Type stub for the private extension module rtcore._core (csrc/bindings/*.cpp).
# Keep each section in step with its binding file, in the same commit.
from typing import Any

import numpy as np
import numpy.typing as npt

# --- bind_errors.cpp ---------------------------------------------------------------------------

class LayoutError(ValueError): ...

# --- bind_shm.cpp ------------------------------------------------------------------------------

def segment_exists(name: str) -> bool: ...
def unlink_segment(name: str) -> None: ...
def check_segment_name(name: str) -> str: ...
def segment_header_size() -> int: ...

# --- bind_replay.cpp ---------------------------------------------------------------------------



# --- bind_board.cpp ----------------------------------------------------------------------------



# --- bind_timer.cpp ----------------------------------------------------------------------------



# --- bind_sched.cpp ----------------------------------------------------------------------------



# --- bind_params.cpp ---------------------------------------------------------------------------



# --- bind_preprocess.cpp -----------------------------------------------------------------------

class AreaResize:
    """Area downscaling of uint8 frames, RGB(A) -> BT.601 luma folded in. Not for concurrent calls."""

    def __init__(self, in_h: int, in_w: int, out_h: int, out_w: int) -> None: ...
    @property
    def in_shape(self) -> tuple[int, int]: ...
    @property
    def out_shape(self) -> tuple[int, int]: ...
    def __call__(self, src: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8]) -> None: ...

# --- end ---------------------------------------------------------------------------------------
