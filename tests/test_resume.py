"""Keep, resume, play: the whole learner state in a checkpoint, ``rtcore run --resume`` and ``rtcore play``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtcore.agent.checkpoint import (CheckpointMismatch, Identity, LearnerState, find_state, load_state, save_state)

IDENT = Identity(env="gb/TestRom", model="impala:k=1", obs_shape=(84, 84), obs_dtype="uint8", n_actions=6,
                 frame_stack=2, numel=10)


def _state(**kw) -> LearnerState:
    rng = np.random.default_rng(0)
    base = dict(identity=IDENT, params=rng.normal(size=10).astype(np.float32),
                target=rng.normal(size=10).astype(np.float32), moments=rng.random((2, 10)).astype(np.float32),
                opt_step=7, updates=7, target_version=2, param_version=8, env_steps=1234, seconds=12.5, resumes=0,
                rng={"numpy": np.random.get_state()})
    base.update(kw)
    return LearnerState(**base)


def test_learner_state_round_trips(tmp_path):
    st = _state()
    (tmp_path / "checkpoints").mkdir()
    path = save_state(tmp_path / "checkpoints" / "final.state.pt", st)
    back = load_state(path)
    assert back.identity == IDENT
    for k in ("params", "target", "moments"):
        np.testing.assert_array_equal(getattr(back, k), getattr(st, k))
    assert (back.opt_step, back.updates, back.target_version, back.env_steps, back.seconds) == (7, 7, 2, 1234, 12.5)
    # a run directory, a model checkpoint beside its state, or the state itself all name the same file
    (tmp_path / "checkpoints" / "final.pt").write_bytes(b"")
    assert find_state(tmp_path) == path == find_state(tmp_path / "checkpoints" / "final.pt") == find_state(path)


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        find_state(tmp_path)
    junk = tmp_path / "junk.state.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable rtcore learner state"):
        load_state(junk)
    with pytest.raises(ValueError, match="moments has shape"):
        save_state(tmp_path / "x.state.pt", _state(moments=np.zeros((3, 10), np.float32)))
    other = Identity(**{**IDENT.__dict__, "model": "impala:k=7", "numel": 11})
    with pytest.raises(CheckpointMismatch, match="model: checkpoint has 'impala:k=7', this run 'impala:k=1'.*numel"):
        IDENT.check(other, "ckpt")


def _cli(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtcore", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


RUN = ["--env", "gb/TestRom", "--model", "impala:k=1", "--frame-stack", "2", "--replay-capacity", "4000",
       "--latency-iters", "5", "--workers", "2", "--learners", "1", "--learning-starts", "64", "--batch-size", "8",
       "--json", "--no-tensorboard", "--no-plots", "--metrics-interval", "0.5", "--seed", "3",
       # the learning settings this test was written with (the defaults changed for runs of minutes)
       "--updates-per-step", "0", "--target-update", "2000", "--epsilon-decay-steps", "100000"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(600)
def test_resume_continues_the_run_and_play_records_it(tmp_path):
    run_dir = tmp_path / "run"
    first = _cli(tmp_path, "run", "--run-dir", str(run_dir), "--seconds", "4", *RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = json.loads(first.stdout.strip().splitlines()[-1])
    st1 = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert st1.updates == s1["learner_updates"] > 0 and st1.opt_step == st1.updates
    assert st1.env_steps >= s1["env_steps"] > 0 and st1.resumes == 0
    rows1 = _rows(run_dir)

    second = _cli(tmp_path, "run", "--resume", str(run_dir), "--seconds", "4", "--learning-starts", "16", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    s2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert s2["run_dir"] == str(run_dir) and s2["extra"]["env_steps_before"] == st1.env_steps
    st2 = load_state(run_dir / "checkpoints" / "final.state.pt")
    assert st2.resumes == 1
    assert st2.updates == s2["learner_updates"] > st1.updates  # Adam's step and the update count go on
    assert st2.opt_step == st2.updates
    assert st2.env_steps > st1.env_steps and st2.seconds > st1.seconds
    rows = _rows(run_dir)
    assert len(rows) > len(rows1) and rows[: len(rows1)] == rows1  # appended, not rewritten
    new = rows[len(rows1):]
    assert float(new[0]["time_s"]) > float(rows1[-1]["time_s"])
    assert int(new[0]["env_steps"]) > int(rows1[-1]["env_steps"])
    assert json.loads((run_dir / "config.json").read_text())["seconds"] == 4  # the option given overrides

    bad = _cli(tmp_path, "run", "--resume", str(run_dir), "--model", "impala:k=2", "--seconds", "1")
    assert bad.returncode == 2
    assert "belongs to another model or env" in bad.stderr and "impala:k=2" in bad.stderr

    gif = tmp_path / "play.gif"
    played = _cli(tmp_path, "play", str(run_dir), "--seconds", "2", "--record", str(gif), "--json", "--quiet")
    assert played.returncode == 0, played.stderr[-3000:]
    p = json.loads(played.stdout.strip().splitlines()[-1])
    assert p["learners"] == 0 and p["env_steps"] > 0 and p["extra"]["recorded_frames"] > 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 1 and im.size[0] >= 160
    assert not list(Path(p["run_dir"]).glob("frames.raw*"))  # the raw frames are gone once encoded


def test_play_refuses_what_it_cannot_do(tmp_path):
    r = _cli(tmp_path, "play", str(tmp_path / "nothing"), "--seconds", "1")
    assert r.returncode == 2 and "neither a run directory nor a checkpoint" in r.stderr
    (tmp_path / "checkpoints").mkdir()
    save_state(tmp_path / "checkpoints" / "final.state.pt", _state())
    (tmp_path / "config.json").write_text(json.dumps({"env": "gb/TestRom"}))
    r = _cli(tmp_path, "play", str(tmp_path), "--record", str(tmp_path / "x.avi"))
    assert r.returncode == 2 and "expected a .gif or .mp4" in r.stderr


@pytest.mark.parametrize("shape", [(84, 84), (4, 10, 10), (3, 32, 40)])
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_recorded_frames_encode_to_gif_and_mp4(tmp_path, shape, suffix):
    from rtcore.agent.recording import encode, to_image

    pytest.importorskip("imageio_ffmpeg") if suffix == ".mp4" else None
    rng = np.random.default_rng(0)
    frames = (rng.random((12, *shape)) > 0.5).astype(np.uint8) * 200
    raw = tmp_path / "frames.raw"
    frames.tofile(raw)
    (tmp_path / "frames.raw.json").write_text(json.dumps({"shape": list(shape), "dtype": "uint8"}))
    out = tmp_path / f"out{suffix}"
    assert encode(raw, str(out), fps=60.0) == 12
    assert out.stat().st_size > 0 and not raw.exists()
    img = to_image(frames[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] >= 160
