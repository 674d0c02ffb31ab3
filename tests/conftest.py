"""Shared test fixtures.

Every test runs under a leak check: the shared-memory segments it (or any process it started) created
must be gone when it ends. Segment names carry a per-session prefix, set here before anything imports
rtcore, so concurrent test sessions on one machine do not see each other's segments.
"""

from __future__ import annotations

import os

os.environ.setdefault("RTCORE_SHM_PREFIX", f"rtcoretest{os.getpid()}")
# Subprocesses (`python -m rtcore`, `python -c`) started from the repository root must import the rtcore
# this session imports (installed, or on PYTHONPATH), not the source tree the cwd would put first.
os.environ.setdefault("PYTHONSAFEPATH", "1")

import glob  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402

# Ctrl-C is a behaviour under test (runs, waits, the cluster's early end). A suite launched in the
# background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and so would every
# process it starts: give this process Python's own handler, which its children get back as the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHM_PREFIX = os.environ["RTCORE_SHM_PREFIX"]


def shm_segments() -> set[str]:
    return {os.path.basename(p) for p in glob.glob(f"/dev/shm/{SHM_PREFIX}*")}


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = shm_segments()
    yield
    import gc

    gc.collect()
    leaked = shm_segments() - before
    for name in leaked:  # clean up so one leak does not cascade into every later test
        try:
            os.unlink(f"/dev/shm/{name}")
        except FileNotFoundError:
            pass
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"


@pytest.fixture
def rng() -> np.random.Generator:
    random.seed(0)
    return np.random.default_rng(0)


@pytest.fixture
def kill_alive():
    """A function for a multi-process test's ``finally``: SIGKILL and join every process still running."""

    def kill(procs) -> None:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()

    return kill


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, as in a worker (also keeps torch tests fast on a loaded machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
