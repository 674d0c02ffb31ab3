"""rtcore report: the run's plots are drawn from its metrics, and redrawn on demand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rtcore.agent.metrics import METRIC_COLUMNS, MetricsWriter, read_metrics
from rtcore.agent.report import PLOTS, draw, regret_shares


def fake_run(tmp_path, rows: int = 20):
    rng = np.random.default_rng(0)
    w = MetricsWriter(tmp_path, tensorboard=False)
    for i in range(rows):
        w.write({"time_s": float(i), "env_steps": 60 * i, "inaction_fraction": 0.01, "inaction_window": 0.02,
                 "delay_mean": 3.0, "delay_p50": 3, "delay_p99": 5, "delay_window": 3.1,
                 "episode_return": float(i % 5) if i > 3 else math.nan, "mean_return": 2.0 if i > 3 else math.nan})
    w.close()
    summary = {"env": "ALE/Pong-v5", "model": "impala:k=1", "mode": "staggered", "inaction_fraction": 0.01,
               "action_interval_target": 1 / 60, "tau_m": 1 / 60}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    np.save(tmp_path / "action_intervals.npy", rng.normal(1 / 60, 1e-4, 1000))
    np.save(tmp_path / "delay_histogram.npy", np.array([0, 10, 50, 300, 40, 0, 0, 1.0]))
    return tmp_path


def test_metrics_csv_has_every_column_and_reads_back(tmp_path):
    fake_run(tmp_path, rows=5)
    m = read_metrics(tmp_path)
    assert list(m) == list(METRIC_COLUMNS)
    assert m["env_steps"].tolist() == [0, 60, 120, 180, 240]
    assert np.isnan(m["episode_return"][:4]).all() and m["episode_return"][4] == 4.0
    assert np.isnan(m["loss"]).all()  # never written: empty cells read as NaN


def test_draw_writes_every_plot(tmp_path):
    fake_run(tmp_path)
    paths = draw(tmp_path)
    assert sorted(p.name for p in paths) == sorted(PLOTS)
    for p in paths:
        assert p.stat().st_size > 5000, p  # a real PNG with content, not an empty figure
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_copes_with_a_run_that_recorded_nothing(tmp_path):
    MetricsWriter(tmp_path, tensorboard=False).close()
    assert len(draw(tmp_path)) == len(PLOTS)


def test_report_command_redraws(tmp_path, capsys):
    from rtcore.cli import main

    fake_run(tmp_path)
    assert main(["report", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["env"] == "ALE/Pong-v5" and len(out["plots"]) == len(PLOTS)


def test_report_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    from rtcore.cli import main

    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        draw(tmp_path)
    assert main(["report", str(tmp_path)]) == 2  # a bad option: exit 2 with one line
    err = capsys.readouterr().err
    assert err.startswith("rtcore report: error: ") and "no metrics.csv" in err and err.count("\n") == 1


def test_regret_shares_sum_to_one_and_split_by_delay():
    s = regret_shares(0.2, np.array([25, 50, 25]))
    assert s["inaction"] == pytest.approx(0.2)
    assert s["on_time"] == pytest.approx(0.8 * 0.25)
    assert s["delay"] == pytest.approx(0.8 * 0.75)
    assert sum(s.values()) == pytest.approx(1.0)
    assert math.isnan(regret_shares(0.1, np.zeros(3))["delay"])


def test_tensorboard_events_are_written_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    w = MetricsWriter(tmp_path, tensorboard=True)
    assert w.tensorboard_error is None
    w.write({"time_s": 1.0, "env_steps": 60, "inaction_fraction": 0.0, "loss": math.nan})
    w.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
