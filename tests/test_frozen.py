"""Frozen TorchScript workers (``--backend frozen``): the optimized graph follows new parameter versions in place.

What is checked: the refreshed frozen module computes what the scripted module computes on the same version
(every built-in architecture, with and without action history); modules whose freeze folds several
parameters into one constant are refused with the reason; a worker-side follower takes new versions from a
ParamStore off the hot path and only ever runs a complete version; the run option is validated and a short
run acts on refreshed versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

from rtcore import ParamStore
from rtcore.agent.config import RunConfig
from rtcore.models import build_model, example_history, example_input
from rtcore.models.export import script_model
from rtcore.models.frozen import FrozenFollower, FrozenUnsupported, RefreshableFrozen

CASES = [
    ("impala:k=1", 2, None, 0),
    ("impala:k=1,dueling=1", 1, None, 0),
    ("nature", 2, None, 0),
    ("minatar", 1, (4, 10, 10), 0),
    ("mlp", 2, (8,), 0),
    ("mlp:atoms=11,vmin=-5,vmax=5", 1, (8,), 0),
    ("impala:k=1", 1, None, 3),
    ("minatar:atoms=11,dueling=1", 1, (4, 10, 10), 2),
]


def _model(spec, frames, obs, k):
    torch.manual_seed(0)
    kw = {} if obs is None else {"obs_shape": obs}
    m = build_model(spec, frames, 6, action_history=k, **kw).eval()
    x = example_input(m, batch=1, seed=1)
    example = (x,) if not k else (x, example_history(m, batch=1, seed=1))
    return m, script_model(m), example


def _flat_of(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("spec,frames,obs,k", CASES, ids=[f"{c[0]}-k{c[3]}" for c in CASES])
def test_refreshed_frozen_module_computes_what_the_scripted_one_does(spec, frames, obs, k):
    from rtcore.shared.params import bind_flat

    _, scripted, example = _model(spec, frames, obs, k)
    frozen = RefreshableFrozen(scripted, example, seed=3)
    ref = script_model(build_model(spec, frames, 6, action_history=k, **({} if obs is None else {"obs_shape": obs})))
    gen = torch.Generator().manual_seed(11)
    numel = frozen.numel
    for version in (1, 2, 3):
        flat = torch.randn(numel, generator=gen) * 0.1
        bind_flat(ref, flat)
        frozen.refresh(flat, version)
        with torch.inference_mode():
            want, got = ref(*example), frozen(*example)
        assert frozen.version == version
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max())))
    # a second batch of frames as well (the check is not tied to the build's example)
    x2 = (example[0].flip(0) if example[0].dtype == torch.uint8 else -example[0],) + tuple(example[1:])
    with torch.inference_mode():
        torch.testing.assert_close(frozen(*x2), ref(*x2), rtol=1e-4, atol=1e-3)


def test_noisy_model_is_refused_with_the_reason():
    _, scripted, example = _model("impala:k=1,noisy=1", 1, None, 0)
    with pytest.raises(FrozenUnsupported, match="folded several parameters"):
        RefreshableFrozen(scripted, example)


class _ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_a_freeze_that_folds_parameters_together_is_refused():
    # conv + batch norm: the freeze folds the norm's weight and bias into the convolution's constants
    m = _ConvBN().eval()
    with torch.no_grad():
        m.bn.running_var.uniform_(0.5, 2.0)
    with pytest.raises(FrozenUnsupported):
        RefreshableFrozen(script_model(m), (torch.randn(1, 2, 8, 8),))


def test_refresh_checks_its_input():
    _, scripted, example = _model("mlp", 1, (8,), 0)
    frozen = RefreshableFrozen(scripted, example)
    with pytest.raises(ValueError, match=r"expected \(%d,\)" % frozen.numel):
        frozen.refresh(torch.zeros(frozen.numel + 1))
    with pytest.raises(ValueError, match="shapes"):
        frozen.refresh([torch.zeros(3)])
    with pytest.raises(TypeError, match="TorchScript"):
        RefreshableFrozen(build_model("mlp", 1, 6, obs_shape=(8,)), example)


@pytest.mark.timeout(120)
def test_follower_takes_new_versions_off_the_hot_path_and_never_runs_a_mix():
    """A publisher thread writes versions whose parameters are all equal to the version number (scaled);
    at every turn the follower's output must be exactly the scripted module's output on the version it
    claims, and it must reach the newest version once publishing stops."""
    from rtcore.shared.params import bind_flat

    _, scripted, example = _model("minatar", 1, (4, 10, 10), 0)
    numel = sum(p.numel() for p in scripted.parameters())
    store = ParamStore(numel, buffers=4)
    ref = script_model(build_model("minatar", 1, 6, obs_shape=(4, 10, 10)))
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(numel, generator=gen) * 0.1
    flat_of = {}

    def version_flat(v: int) -> torch.Tensor:
        return base * (1.0 + 0.01 * v)

    store.publish(version_flat(1).numpy())
    flat_of[1] = version_flat(1)
    follower = FrozenFollower(store, scripted, example, seed=1)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            v = store.version + 1
            flat_of[v] = version_flat(v)
            store.publish(flat_of[v].numpy(), timeout=1.0)
            time.sleep(0.002)

    try:
        assert follower.start() == 1
        t = threading.Thread(target=publish)
        t.start()
        seen = set()
        try:
            deadline = time.monotonic() + 20
            while len(seen) < 10 and time.monotonic() < deadline:
                lag = follower.turn()
                assert lag >= 0
                v = follower.version
                with torch.inference_mode():
                    got = follower.module(*example)
                bind_flat(ref, flat_of[v])
                with torch.inference_mode():
                    want = ref(*example)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                seen.add(v)
                time.sleep(0.001)
        finally:
            stop.set()
            t.join()
        assert len(seen) >= 10, seen  # it followed the versions, not only the first
        newest = store.version
        deadline = time.monotonic() + 10
        while follower.version != newest and time.monotonic() < deadline:
            follower.turn()
            time.sleep(0.001)
        assert follower.version == newest
        assert follower.turn() == 0
        assert follower.refreshes >= 10 and follower.refresh_s > 0
    finally:
        follower.close()
        store.close()


@pytest.mark.parametrize("change,match", [
    ({"backend": "frozen", "device": "cuda"}, "CPU workers only"),
    ({"backend": "frozen", "agent": "rainbow"}, "noisy"),
    ({"backend": "frozen", "noisy": True}, "noisy"),
    ({"backend": "frozn"}, "'frozen'"),
])
def test_frozen_backend_options_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**change).validate()


@pytest.mark.timeout(180)
def test_a_run_with_frozen_workers_acts_on_refreshed_versions(tmp_path):
    cmd = [sys.executable, "-m", "rtcore", "run", "--run-dir", str(tmp_path / "run"), "--json", "--no-tensorboard",
           "--env", "rtcore/Catch", "--model", "mlp", "--backend", "frozen", "--seconds", "6",
           "--learning-starts", "100", "--latency-iters", "10"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stderr
    s = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    assert s["learner_updates"] > 10 and s["param_version"] > 10
    assert s["worker_versions_picked_up"] > 1  # the workers acted on versions refreshed during the run
    extra = s["extra"]
    assert extra["frozen_refreshes"] > 1 and extra["frozen_refresh_s_mean"] > 0
    assert 0 <= extra["frozen_version_lag_mean"] < 50
    assert s["faults"] == []


def test_a_run_refuses_a_model_the_frozen_backend_cannot_follow(tmp_path):
    cmd = [sys.executable, "-m", "rtcore", "run", "--run-dir", str(tmp_path / "run"), "--no-tensorboard",
           "--env", "rtcore/Catch", "--model", "mlp", "--noisy", "--backend", "frozen", "--seconds", "1"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "noisy" in p.stderr and "Traceback" not in p.stderr
