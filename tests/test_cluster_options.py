"""``--cluster`` and its options are checked before anything starts, with or without Ray installed."""

from __future__ import annotations

import importlib.util

import pytest

from rtcore import RunConfig
from rtcore.cli import main


@pytest.mark.parametrize("argv,message", [
    (["--cluster", "dask"], "cluster = 'dask': expected 'ray'"),
    (["--cluster", "ray:"], "cluster = 'ray:': expected 'ray'"),
    (["--env-nodes", "2"], "env_nodes = 2: expected 1 without --cluster"),
    (["--workers-on", "gpu"], "workers_on = 'gpu': expected 'env' without --cluster"),
    (["--learner-gpus", "0.5"], "learner_gpus = 0.5: expected 0.0 without --cluster"),
    (["--cluster", "ray", "--env-nodes", "0"], "env_nodes = 0: expected an integer in [1, 256]"),
    (["--cluster", "ray", "--worker-gpus", "-1"], "worker_gpus = -1.0: expected a number of GPUs"),
    (["--cluster", "ray", "--mode", "sequential"], "mode = 'sequential': expected 'staggered' with --cluster"),
    (["--cluster", "ray", "--workers-on", "gpu", "--workers", "2", "--elastic"],
     "elastic = True: expected off with --workers-on gpu"),
    (["--cluster", "ray", "--workers-on", "gpu"], "workers = 'auto': expected a number with --workers-on gpu"),
    (["--cluster", "ray", "--learners", "2", "--learner-gpus", "0.5"], "learners x learner_gpus <= 0.99"),
    (["--cluster", "ray", "--param-interval", "0"], "param_interval = 0.0: expected seconds in [0.001, 60]"),
])
def test_bad_cluster_options_exit_2_naming_the_option(argv, message, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else real(name, *a))
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtcore run: error: ") and message in err and err.count("\n") == 1, err


def test_without_ray_the_error_names_the_extra_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValueError, match=r'pip install "rtcore\[ray\]"'):
        RunConfig(cluster="ray").validate()
    assert main(["run", "--cluster", "ray"]) == 2
    assert 'pip install "rtcore[ray]"' in capsys.readouterr().err


def test_help_says_a_bare_cluster_ray_starts_a_local_instance_on_loopback(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--cluster ray[:ADDRESS]" in out and "starts a local Ray instance on 127.0.0.1" in out
