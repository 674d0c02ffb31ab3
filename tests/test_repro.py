"""rtcore repro: the command line, the pieces the experiments are made of, and a tiny learning run."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from rtcore import repro
from rtcore.repro.learning import _binned, _MinAtar, run_one


def test_repro_help_lists_the_three_experiments():
    out = subprocess.run([sys.executable, "-m", "rtcore", "repro", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for e in ("inaction", "scaling", "delay-learning", "--quick", "--out", "--json"):
        assert e in out.stdout
    bad = subprocess.run([sys.executable, "-m", "rtcore", "repro", "fly"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_n_grids_cover_the_theory_knee():
    for f in repro.PAPER_FRAMES:
        g = repro._n_grid(f, quick=True)
        assert f in g and min(g) >= 1 and max(g) >= math.ceil(1.4 * f)
    assert repro._wall_grid(596, quick=False) == []  # ~830 processes: simulator only


def test_line_fit_and_extrapolation():
    b, a = repro._line([1.0, 3.0], [2.0, 6.0])
    assert (b, a) == pytest.approx((2.0, 0.0))
    b, a = repro._line([4.0], [2.0])
    assert (b, a) == (0.5, 0.0)


def test_binned_returns_nan_for_empty_bins():
    out = _binned([(100, 1.0), (150, 3.0), (900, 5.0)], 1000)
    assert len(out) == 12 and out[1] == 2.0 and out[10] == 5.0 and math.isnan(out[0])


def test_private_minatar_wrapper_is_seeded_and_channel_first():
    a, b = _MinAtar("breakout", seed=1), _MinAtar("breakout", seed=1)
    oa, _ = a.reset(seed=1)
    ob, _ = b.reset(seed=1)
    assert oa.shape == (4, 10, 10) and oa.dtype == np.float32 and a.default_action == 0
    for t in range(50):
        ra, rb = a.step(t % 3), b.step(t % 3)
        np.testing.assert_array_equal(ra[0], rb[0])
        if ra[2]:
            break


def test_a_sequential_run_counts_its_no_op_frames_against_the_budget():
    curve = run_one("minatar/Breakout", 5, True, 900, 0)
    frames = [f for f, _ in curve]
    assert len(curve) >= 5 and frames == sorted(set(frames)) and frames[-1] <= 900 + 5
    # an episode ends after an action and its no-ops (d + 1 = 6 frames) or inside the no-ops: gaps >= 1 frame,
    # and far fewer agent steps than frames
    assert run_one("minatar/Breakout", 5, True, 900, 0) == curve  # seeded


def test_delay_learning_runs_with_an_action_history():
    curve = run_one("minatar/Breakout", 3, False, 700, 0, action_history=3)
    assert curve and all(f <= 700 for f, _ in curve)
    assert run_one("minatar/Breakout", 3, False, 700, 0, action_history=3) == curve  # seeded
