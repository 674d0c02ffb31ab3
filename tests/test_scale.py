"""Scale on one machine: more processes than parameter buffers, the paper's 72 + 33 processes within a
memory budget, and elastic N (workers spawned when inference slows down, retired when it recovers).

Runs are real ``rtcore run`` processes (Pong on the CPU, emulated inference latency); helpers come from
tests/test_runner.py.
"""

from __future__ import annotations

import csv
import json
import time

import psutil
import pytest

from test_runner import assert_all_gone, descendants, finish, rtcore_run, wait_for_rows

TAU_M = 1 / 60


@pytest.mark.timeout(240)
def test_more_readers_than_parameter_buffers_run_and_pick_up_versions(tmp_path):
    """10 workers + 3 learners (21 reader slots with the spares) share 3 parameter buffers."""
    p = rtcore_run(tmp_path, "--seconds", "12", "--inference-delay", "0.14", "--tau-theta", "0.16",
                   "--workers", "10", "--learners", "3", "--param-buffers", "3", "--learning-starts", "120",
                   "--batch-size", "8", "--target-update", "5", "--updates-per-step", "0.05")
    children: list[psutil.Process] = []
    try:
        wait_for_rows(tmp_path / "run", 1, p, timeout=180)
        children = descendants(p.pid)
    finally:
        code, s, err = finish(p, timeout=200)
    assert code == 0, err
    assert_all_gone(children)
    x = s["extra"]
    assert x["param_buffers"] == 3 and x["param_readers"] == 10 + 3 + 8, x
    assert s["workers"] == 10 and s["learners"] == 3
    assert s["learner_updates"] >= 3, s
    # workers picked up new versions although there are far fewer buffers than readers
    assert s["worker_versions_picked_up"] >= 2, s


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(300)
def test_elastic_n_follows_an_inference_latency_that_doubles_mid_run(tmp_path):
    """The emulated latency doubles at t = 4 s (N* 2 -> 3): the runner spawns a worker, the schedule
    re-staggers, and inaction is back under 2 % within a few seconds; when the latency falls back at
    t = 12 s, the spare worker is retired after the quiet spell."""
    sched = tmp_path / "delays.txt"
    sched.write_text("0 0.02\n4 0.04\n12 0.02\n")
    run_dir = tmp_path / "run"
    p = rtcore_run(tmp_path, "--seconds", "20", "--inference-delay", "0.02", "--tau-theta", "0.03",
                   "--inference-delay-schedule", str(sched), "--workers", "auto", "--elastic", "--max-workers", "6",
                   "--elastic-quiet", "2", "--tau-window", "60", "--learners", "0")
    children: list[psutil.Process] = []
    try:
        wait_for_rows(run_dir, 1, p, timeout=200)
        children = descendants(p.pid)
    finally:
        code, s, err = finish(p, timeout=250)
    assert code == 0, err
    assert_all_gone(children)
    x = s["extra"]
    assert s["workers"] == 2, s  # N* for the 30 ms seed
    assert x["workers_spawned"] >= 1 and x["workers_max"] >= 3, x
    assert x["workers_retired"] >= 1, x
    rows = _rows(run_dir)
    # after the doubling: the rows from 4 + 4 s to the fall at 12 s act on (almost) every step
    after = [r for r in rows if 8.0 <= float(r["time_s"]) <= 12.0]
    steps = sum(float(r["steps_per_s"]) for r in after)
    default = sum(float(r["inaction_window"]) * float(r["steps_per_s"]) for r in after)
    assert after and default / steps < 0.02, [(r["time_s"], r["inaction_window"], r["live_workers"]) for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_papers_72_workers_and_33_learners_fit_and_pick_up_versions(tmp_path):
    """The paper's 100M Pokemon process counts (72 inference + 33 learning processes; impala:k=1 with the
    latency emulated so that N* = 72) start, run, pick up parameter versions and stop cleanly, with the
    sum of every process's PSS at most 12 GiB."""
    p = rtcore_run(tmp_path, "--seconds", "90", "--inference-delay", "1.18", "--tau-theta", "1.2",
                   "--workers", "72", "--learners", "33", "--learning-starts", "200", "--batch-size", "32",
                   "--learner-nice", "5", "--heartbeat-timeout", "5")
    peak = 0
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 1400
    try:
        while p.poll() is None and time.monotonic() < deadline:
            procs = [p.pid] + [c.pid for c in descendants(p.pid)]
            children = descendants(p.pid) or children
            total = 0
            for pid in procs:
                try:
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
                except (OSError, StopIteration):
                    pass
            peak = max(peak, total)
            time.sleep(1.0)
    finally:
        code, s, err = finish(p, timeout=120)
    assert code == 0, err
    assert_all_gone(children)
    print(json.dumps({"peak_pss_gib": peak / 2**30, "summary": s}))
    assert s["workers"] == 72 and s["learners"] == 33
    assert peak <= 12 * 2**30, f"peak PSS {peak / 2**30:.2f} GiB"
    assert s["learner_updates"] >= 1 and s["worker_versions_picked_up"] >= 2, s
