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

class Replay:
    layout_version: int
    @staticmethod
    def create(
        name: str,
        capacity: int,
        obs_shape: list[int],
        dtype: np.dtype[Any],
        frame_stack: int,
        streams: int,
        n_step: int,
        gamma: float,
    ) -> Replay: ...
    @staticmethod
    def attach(name: str) -> Replay: ...
    def add(
        self,
        stream: int,
        obs: npt.NDArray[Any],
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: npt.NDArray[Any] | None,
        was_default: bool,
        delay: int,
    ) -> None: ...
    def add_batch(
        self,
        obs: npt.NDArray[Any],
        action: npt.NDArray[np.int64],
        reward: npt.NDArray[np.float32],
        terminated: npt.NDArray[np.bool_],
        truncated: npt.NDArray[np.bool_],
        next_obs: npt.NDArray[Any] | None,
        was_default: npt.NDArray[np.bool_],
        delay: npt.NDArray[np.int32],
    ) -> None: ...
    def sample(
        self,
        obs: npt.NDArray[Any],
        next_obs: npt.NDArray[Any],
        action: npt.NDArray[np.int64],
        reward: npt.NDArray[np.float32],
        done: npt.NDArray[np.bool_],
        discount: npt.NDArray[np.float32],
        was_default: npt.NDArray[np.bool_],
        delay: npt.NDArray[np.int32],
        index: npt.NDArray[np.int64],
    ) -> None: ...
    def seed(self, seed: int) -> None: ...
    def size(self) -> int: ...
    def head(self, stream: int) -> int: ...
    def collisions(self) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def slots_per_stream(self) -> int: ...
    @property
    def obs_shape(self) -> list[int]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def frame_stack(self) -> int: ...
    @property
    def streams(self) -> int: ...
    @property
    def n_step(self) -> int: ...
    @property
    def gamma(self) -> float: ...
    @property
    def frame_bytes(self) -> int: ...
    @property
    def frame_stride(self) -> int: ...
    @property
    def segment_bytes(self) -> int: ...



# --- bind_board.cpp ----------------------------------------------------------------------------



# --- bind_timer.cpp ----------------------------------------------------------------------------



# --- bind_sched.cpp ----------------------------------------------------------------------------



# --- bind_params.cpp ---------------------------------------------------------------------------



# --- bind_preprocess.cpp -----------------------------------------------------------------------



# --- end ---------------------------------------------------------------------------------------
