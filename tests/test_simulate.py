"""The simulator against the theory, its determinism, its inputs, and ``rtcore simulate --json``."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import rtcore
from rtcore.simulation import SimulationResult, simulate

TAU_M = 1 / 59.7275
TAU_M_NS = round(TAU_M * 1e9)
REQUIRED_KEYS = {
    "late_inaction_fraction",
    "inaction_fraction",
    "action_interval_mean",
    "action_interval_std",
    "action_interval_p99",
    "delay_mean",
    "delay_p99",
    "wasted_actions",
}


def test_n_star_for_a_100ms_model_on_a_game_boy_is_6():
    assert rtcore.n_star(0.1, TAU_M) == 6
    assert rtcore.n_star(0.1, 0.02) == 5  # 5.000000000000001 is 5
    assert simulate(TAU_M, 0.1, 6, steps=10).n_star == 6
    with pytest.raises(ValueError, match="tau_m"):
        rtcore.n_star(0.1, 0)


def test_max_staggering_with_n_star_workers_acts_on_almost_every_step():
    r = simulate(TAU_M, 0.1, 6, mode="max", steps=20000)
    assert r.inaction_fraction <= 0.01
    # Only the ticks before the first action (100 ms = 5.97 ticks) are idle.
    assert r.inaction_steps <= 6
    assert r.action_interval_mean == pytest.approx(0.1 / 6, rel=1e-6)
    assert r.action_interval_std < 1e-6
    assert r.target_interval == pytest.approx(0.1 / 6, rel=1e-6)
    # Delay: the frame read at the start of a 100 ms inference is ~6-7 steps old when applied.
    assert 6 <= r.delay_mean <= 7 and r.delay_p99 == 7


def test_max_staggering_with_half_the_workers_idles_half_the_steps():
    r = simulate(TAU_M, 0.1, 3, mode="max", steps=20000)
    # One action per 100/3 ms, one tick per tau_M: the fraction of ticks with an action is tau_M / (tau / 3).
    assert r.inaction_fraction == pytest.approx(1 - TAU_M / (0.1 / 3), abs=0.002)
    assert r.inaction_fraction == pytest.approx(0.5, abs=0.01)
    assert r.wasted_actions == 0


def test_mean_staggering_equals_max_staggering_for_constant_inference():
    a = simulate(TAU_M, 0.1, 6, mode="max", steps=5000)
    b = simulate(TAU_M, 0.1, 6, mode="mean", steps=5000)
    assert a.inaction_steps == b.inaction_steps and a.posted == b.posted  # 100/6 ms is above the slot floor
    c = simulate(TAU_M, 0.1, 6, mode="mean", steps=5000, min_interval=TAU_M)
    assert c.inaction_steps == a.inaction_steps and c.wasted_actions == 0  # slots >= tau_M apart


def _jittered(frames: float, n: int, mode: str, seed: int, steps: int = 20000, **kw):
    tau = frames * TAU_M
    return simulate(TAU_M, tau, n, mode=mode, steps=steps, seed=seed, tau_theta_dist=f"normal:{0.1 * tau}", **kw)


@pytest.mark.parametrize("frames, ns", [(8, (5, 8, 9, 10, 12)), (70, (60, 70, 80))])
def test_mean_staggering_idles_no_more_than_max_staggering_under_jitter(frames, ns):
    """Algorithm 2 (publish queue) against Algorithm 1 at equal N, inference ~ N(tau, (0.1 tau)^2)."""
    for n in ns:
        for seed in (0, 1):
            mx, mn = _jittered(frames, n, "max", seed), _jittered(frames, n, "mean", seed)
            assert mn.inaction_fraction <= mx.inaction_fraction, (n, seed, mn.inaction_fraction, mx.inaction_fraction)
            assert mn.pushbacks == 0


def test_mean_staggering_at_n_equal_to_the_mean_was_0_78_and_is_below_0_06():
    """The issue's case: tau_theta = 70 frames, N = 70, 10 % sd: 0.78 inaction before the publish queue
    (every overrun and every noisy move of the window mean re-staggered all workers: 3,741 re-staggers
    in 20,000 steps, each worker's cycle 277 frames for a 70-frame model)."""
    r = _jittered(70, 70, "mean", 0)
    assert r.inaction_fraction < 0.06
    assert r.restaggers <= 70  # only the joins


@pytest.mark.parametrize("frames", [5, 8, 70])
def test_both_rules_idle_under_1_percent_with_enough_workers(frames):
    """Once N >= ceil(tau_max / tau_M) (the run's own maximum), both rules act on >= 99 % of the steps."""
    n = frames
    for _ in range(6):  # the smallest N of the form ceil(tau_max / tau_M) that holds for the run at that N
        r = _jittered(frames, n, "max", 0)
        if r.tau_max_final <= n * TAU_M:
            break
        n = math.ceil(r.tau_max_final / TAU_M - 1e-9)
    assert r.tau_max_final <= n * TAU_M
    assert r.inaction_fraction <= 0.01, ("max", n, r.inaction_fraction)
    m = _jittered(frames, n, "mean", 0)
    assert m.inaction_fraction <= 0.01, ("mean", n, m.inaction_fraction)


def test_authors_pushback_equals_paper_for_constant_times_and_differs_under_jitter():
    kw = dict(mode="max", steps=20000, tau_theta_dist="constant", outlier=(50, 0.2))
    a, p = simulate(TAU_M, 0.1, 6, pushback="authors", **kw), simulate(TAU_M, 0.1, 6, pushback="paper", **kw)
    assert a.inaction_steps == p.inaction_steps and a.posted == p.posted
    a, p = _jittered(70, 70, "max", 0, pushback="authors"), _jittered(70, 70, "max", 0, pushback="paper")
    assert a.inaction_steps != p.inaction_steps  # push-backs lost during a delay sleep
    with pytest.raises(ValueError, match="pushback must be one of"):
        simulate(TAU_M, 0.1, 6, pushback="author")


def test_unstaggered_workers_bunch_up():
    r = simulate(TAU_M, 0.1, 6, mode="none", steps=20000)
    # All six finish together: the env sees one action per 100 ms, and 5 of every 6 are wasted.
    assert r.inaction_fraction == pytest.approx(1 - TAU_M / 0.1, abs=0.002)
    assert r.wasted_actions >= 5 * r.applied - 5


@pytest.mark.parametrize("tau_theta, tau_l", [(0.1, 0.05), (0.1, 0.0), (0.02, 0.013)])
def test_sequential_inaction_is_exact(tau_theta, tau_l):
    """Sequential acting and learning, constant times.

    Ticks k = 0 .. K-1 happen at k * tau_M. The single worker starts inference m at m * C, C = tau_theta +
    tau_L, and posts it at p_m = m * C + tau_theta; it then learns for tau_L. Tick k applies the newest
    post made strictly before k * tau_M and not applied yet. When C >= tau_M consecutive posts are at
    least one tick apart, so each is applied (none wasted) and the number of ticks with an action is

        A = #{m >= 0 : m * C + tau_theta < (K - 1) * tau_M} = ceil(((K - 1) * tau_M - tau_theta) / C),

    hence inaction = 1 - A / K exactly, which tends to 1 - tau_M / (tau_theta + tau_L). The simulator
    works in integer nanoseconds, so the check uses the same rounded periods.
    """
    steps = 30011
    r = simulate(TAU_M, tau_theta, 1, mode="sequential", tau_l=tau_l, steps=steps)
    c_ns = round(tau_theta * 1e9) + round(tau_l * 1e9)
    assert c_ns >= TAU_M_NS
    span = (steps - 1) * TAU_M_NS - round(tau_theta * 1e9)
    applied = -(-span // c_ns)  # ceil for positive integers
    assert r.applied == applied
    assert r.wasted_actions == 0
    assert r.inaction_steps == steps - applied
    assert r.inaction_fraction == (steps - applied) / steps
    assert r.inaction_fraction == pytest.approx(1 - TAU_M / (tau_theta + tau_l), abs=2 / steps + 1e-4)


def test_same_seed_same_result_and_seeds_differ():
    kw = dict(mode="max", steps=5000, tau_theta_dist="normal:0.005")
    a = simulate(TAU_M, 0.1, 7, seed=3, **kw)
    b = simulate(TAU_M, 0.1, 7, seed=3, **kw)
    c = simulate(TAU_M, 0.1, 7, seed=4, **kw)
    assert a == b
    assert a.to_dict() != c.to_dict()


def test_jitter_raises_tau_max_and_needs_more_workers():
    r = simulate(TAU_M, 0.1, 6, mode="max", steps=20000, tau_theta_dist="lognormal:0.05", seed=1)
    assert r.tau_max_final > 0.1  # the running max grew past the seed
    assert r.pushbacks >= 1
    assert r.target_interval == pytest.approx(r.tau_max_final / 6, rel=1e-6)
    assert r.inaction_fraction > 0.01  # N* of the mean is not enough with a running max


def test_samples_file_text_and_npy(tmp_path):
    txt = tmp_path / "times.txt"
    txt.write_text("0.09, 0.095\n0.1\n")
    npy = tmp_path / "times.npy"
    np.save(npy, np.array([0.09, 0.095, 0.1]))
    a = simulate(TAU_M, 0.1, 6, steps=3000, tau_theta_dist=f"samples:{txt}")
    b = simulate(TAU_M, 0.1, 6, steps=3000, tau_theta_dist=f"samples:{npy}")
    assert a.to_dict() | {"tau_theta_dist": ""} == b.to_dict() | {"tau_theta_dist": ""}
    assert a.tau_max_final == pytest.approx(0.1)
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1 -0.2\n")
    with pytest.raises(ValueError, match="> 0"):
        simulate(TAU_M, 0.1, 6, tau_theta_dist=f"samples:{bad}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        simulate(TAU_M, 0.1, 6, tau_theta_dist=f"samples:{tmp_path / 'missing.txt'}")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(mode="fast"), ValueError, "mode must be one of"),
        (dict(tau_theta_dist="uniform:1"), ValueError, "is not one of"),
        (dict(tau_theta_dist="normal:x"), ValueError, "expected 'normal:<number>'"),
        (dict(tau_theta_dist="normal:-1"), ValueError, ">= 0"),
        (dict(mode="sequential"), ValueError, "exactly one worker"),
        (dict(tau_l=0.1), ValueError, "tau_l applies to mode 'sequential'"),
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(steps=1.5), TypeError, "steps must be an int"),
        (dict(tau_m=0), ValueError, "tau_m must be"),
        (dict(tau_theta=float("nan")), ValueError, "tau_theta must be"),
    ],
)
def test_bad_inputs_are_named(kwargs, error, match):
    args = dict(tau_m=TAU_M, tau_theta=0.1, workers=6) | kwargs
    with pytest.raises(error, match=match):
        simulate(**args)


def test_result_to_dict_round_trips():
    r = simulate(TAU_M, 0.05, 3, steps=100)
    d = r.to_dict()
    assert REQUIRED_KEYS <= d.keys()
    assert SimulationResult(**d) == r


def test_cli_json_prints_one_object_with_the_keys(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rtcore", "simulate", "--tau-m", str(TAU_M), "--tau-theta", "0.1", "--workers", "6",
         "--mode", "max", "--steps", "5000", "--seed", "1", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert REQUIRED_KEYS <= d.keys()
    assert d["inaction_fraction"] <= 0.01 and d["workers"] == 6 and d["n_star"] == 6
    assert all(isinstance(d[k], (int, float)) and math.isfinite(d[k]) for k in REQUIRED_KEYS)


def test_cli_human_output_and_errors(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "rtcore", "simulate", "--tau-theta", "0.05", "--mode", "sequential", "--tau-l", "0.01",
         "--steps", "1000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )
    assert "inaction" in ok.stdout and "sequential" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rtcore", "simulate", "--tau-theta", "0.1", "--tau-theta-dist", "gamma:2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "is not one of" in bad.stderr  # a bad option: exit 2, one line
    assert bad.stderr.startswith("rtcore simulate: error: ") and "Traceback" not in bad.stderr


def test_lattice_pushback_keeps_the_spacing_where_the_papers_rule_does_not():
    kw = dict(mode="max", steps=30000, tau_theta_dist="normal:0.01", seed=0)
    paper = simulate(TAU_M, 0.1, 7, pushback="paper", **kw)
    lattice = simulate(TAU_M, 0.1, 7, pushback="lattice", **kw)
    assert paper.tau_max_final == lattice.tau_max_final  # same draws, same running max
    assert lattice.action_interval_cv < 0.05
    assert paper.action_interval_cv > 4 * lattice.action_interval_cv
    # The lattice's inaction is the structural one: interval tau_max / 7 against tau_M.
    assert lattice.inaction_fraction == pytest.approx(1 - TAU_M / (lattice.tau_max_final / 7), abs=0.02)
    assert paper.inaction_fraction > lattice.inaction_fraction


def test_tau_window_forgets_a_stall_that_the_papers_maximum_keeps():
    # 50 ms inference, a Game Boy's tau_M, N* = 3 plus one spare worker; the 9th inference stalls for
    # 400 ms (~0.1 s in). The paper's all-time maximum keeps tau_max at 400 ms: interval 100 ms ~ 6
    # ticks, 5 of 6 steps idle for good. A 64-report window forgets it after 64 reports (~6.4 s at the
    # stalled spacing) and re-staggers at 12.5 ms < tau_M: no idle step in the second half.
    kw = dict(steps=12000, outlier=(8, 0.4))
    paper = simulate(TAU_M, 0.05, 4, tau_window=0, **kw)
    windowed = simulate(TAU_M, 0.05, 4, tau_window=64, **kw)
    assert paper.tau_max_final == pytest.approx(0.4) and windowed.tau_max_final == pytest.approx(0.05)
    assert paper.late_inaction_fraction == pytest.approx(1 - TAU_M / 0.1, abs=0.01)  # ~0.833
    assert paper.inaction_fraction > 0.8
    assert windowed.late_inaction_fraction == 0.0
    # Only the ~6.4 s (~380 steps) before the stall leaves the window idle at the paper's rate.
    assert windowed.inaction_fraction < 0.04
    assert windowed.target_interval == pytest.approx(0.0125) and windowed.tau_window == 64
    # Without the stall the window changes nothing.
    assert simulate(TAU_M, 0.05, 4, steps=3000, tau_window=64).to_dict() | {"tau_window": 0} == simulate(
        TAU_M, 0.05, 4, steps=3000
    ).to_dict()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tau_window=-1), ValueError, r"tau_window must be in \[0, 1024\], got -1"),
        (dict(tau_window=1025), ValueError, r"tau_window must be in \[0, 1024\], got 1025"),
        (dict(tau_window=2.5), TypeError, "tau_window must be an int"),
        (dict(outlier=(1, 0)), ValueError, "outlier time must be"),
        (dict(outlier=(-1, 0.1)), ValueError, "outlier index must be >= 0"),
        (dict(outlier=0.4), TypeError, r"outlier must be a \(k, seconds\) tuple"),
    ],
)
def test_bad_tau_window_and_outlier_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate(TAU_M, 0.05, 4, steps=100, **kwargs)


def test_cli_tau_window_and_outlier(tmp_path):
    base = [sys.executable, "-m", "rtcore", "simulate", "--tau-theta", "0.05", "--workers", "4", "--steps", "12000",
            "--outlier", "8:0.4", "--json"]
    runs = {}
    for w in ("0", "64"):
        out = subprocess.run(base + ["--tau-window", w], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
        runs[w] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["0"]["tau_window"] == 0 and runs["64"]["tau_window"] == 64 and runs["64"]["outlier"] == [8, 0.4]
    assert runs["0"]["late_inaction_fraction"] > 0.8 and runs["64"]["late_inaction_fraction"] == 0.0
    for bad, msg in (("--tau-window=-3", "tau_window must be in"), ("--outlier=x", "--outlier expects K:SECONDS")):
        r = subprocess.run(base[:-1] + [bad], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr
