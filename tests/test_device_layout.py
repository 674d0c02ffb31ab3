"""The GPU-resident learner layout, run on the CPU (``RTCORE_DEVICE_LAYOUT=1``).

On a GPU the learners share one learner state tensor (CUDA IPC handles, passed by torch's multiprocessing)
and publish each version into a device mirror of the ParamStore's buffers that workers on that GPU read.
This machine has no GPU, so the CUDA tests skip; with ``RTCORE_DEVICE_LAYOUT=1`` CPU learners keep exactly
that layout (a torch tensor passed by torch's multiprocessing, a mirror the CPU workers read, no host
copy of the versions), so the protocol of the GPU path -- turnstile order, the step journal on a tensor
state, the mirror's pins, checkpoints read from the tensor state and the mirror, resume, a learner killed
mid-update -- runs in the default suite. What it cannot check is CUDA itself (streams, IPC handles,
host registration).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtcore.agent.checkpoint import load_state

RUN = ["--env", "rtcore/Catch", "--model", "mlp", "--json", "--no-tensorboard", "--no-plots", "--latency-iters", "5",
       "--learning-starts", "100", "--metrics-interval", "0.5", "--seed", "5"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "RTCORE_DEVICE_LAYOUT": "1"}


def _cli(tmp_path: Path, *args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtcore", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _summary(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


@pytest.mark.timeout(400)
def test_two_learners_on_the_device_layout_publish_through_the_mirror_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = _cli(tmp_path, "run", "--run-dir", str(run_dir), "--learners", "2", "--seconds", "6", *RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = _summary(first.stdout)
    assert s1["learner_updates"] > 20 and s1["faults"] == []
    # every update published once, and the workers (no host copy: the mirror only) acted on new versions
    assert s1["param_version"] == 1 + s1["learner_updates"]
    assert s1["worker_versions_picked_up"] > 1
    st1 = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert st1.opt_step == st1.updates == s1["learner_updates"]

    second = _cli(tmp_path, "run", "--resume", str(run_dir), "--seconds", "4", "--learning-starts", "32", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    s2 = _summary(second.stdout)
    st2 = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert st2.resumes == 1 and st2.updates == s2["learner_updates"] > st1.updates and st2.opt_step == st2.updates


@pytest.mark.timeout(200)
def test_a_learner_killed_mid_update_on_the_device_layout_is_replaced_and_updates_go_on(tmp_path):
    from rtcore.agent.metrics import read_metrics

    run_dir = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "rtcore", "run", "--run-dir", str(run_dir), "--learners", "1",
                          "--seconds", "60", *RUN], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_env())
    def updates() -> float:
        if not (run_dir / "metrics.csv").exists():
            return 0
        u = read_metrics(run_dir)["learner_updates"]
        return u[-1] if len(u) else 0

    try:
        deadline = time.monotonic() + 120
        while updates() < 20:
            assert p.poll() is None, p.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no learner updates"
            time.sleep(0.1)
        procs = json.loads((run_dir / "processes.json").read_text())["children"]
        os.kill(next(c["pid"] for c in procs if c["kind"] == "learner"), signal.SIGKILL)  # it is always updating
        at_kill = updates()
        deadline = time.monotonic() + 90
        while updates() < at_kill + 20:
            assert p.poll() is None, p.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"updates did not resume after the kill (at {at_kill})"
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:  # a failed check: end the run the way a user would, so it cleans up
            p.send_signal(signal.SIGTERM)
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
    assert p.returncode == 143, err[-3000:]
    s = _summary(out)
    assert s["learner_restarts"] == 1 and s["steps_rolled_back"] + s["steps_completed"] <= 1
    st = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert st.opt_step == st.updates == s["learner_updates"]
