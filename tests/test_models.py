"""Model zoo: parameter counts of the paper's table, spec parsing, and agreement of the backends."""

from __future__ import annotations

import pytest
import torch

from rtcore.models import PAPER_SIZES, build_model, count_parameters, example_input, parse_model_spec
from rtcore.models.export import load_for_inference, measure_latency, save_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The paper's table (one 84x84 frame, 6 Game Boy actions): 0.9M, 10.4M, 105M, 1.0B, each within half a unit
# of its last printed digit.
@pytest.mark.parametrize("spec,table,half_unit,built", [
    ("impala:k=1", 0.9e6, 0.05e6, True), ("impala:k=7", 10.4e6, 0.05e6, True), ("impala:k=29", 105e6, 0.5e6, True),
    ("impala:k=98", 1.0e9, 0.05e9, False),  # counted, not built: 4 GB of float32
])
def test_parameter_counts_match_the_papers_table(spec, table, half_unit, built):
    n = count_parameters(spec, 1, 6)
    assert n == PAPER_SIZES[spec]
    assert abs(n - table) <= half_unit
    if built:
        assert n_params(build_model(spec, 1, 6)) == n


@pytest.mark.parametrize("spec", [
    "impala:k=1", "impala:k=0.5", "impala:k=2,deep=1", "impala-deep:k=1,dueling=1", "impala:k=1.5,hidden=64",
    "nature", "nature:k=1,dueling=1", "nature:k=0.25",
])
@pytest.mark.parametrize("in_frames,n_actions", [(1, 6), (4, 18)])
def test_count_function_is_exact(spec, in_frames, n_actions):
    model = build_model(spec, in_frames, n_actions)
    assert count_parameters(spec, in_frames, n_actions) == n_params(model)
    q = model(example_input(model, 2))
    assert q.shape == (2, n_actions) and q.dtype == torch.float32


def test_count_function_handles_other_frame_sizes():
    for spec in ("impala:k=1", "impala:k=1,deep=1", "nature"):
        model = build_model(spec, 2, 4, frame_size=(96, 72))
        assert count_parameters(spec, 2, 4, frame_size=(96, 72)) == n_params(model)
        assert model(example_input(model, 1)).shape == (1, 4)


@pytest.mark.parametrize("spec,obs_shape", [
    ("minatar", (4, 10, 10)), ("minatar:k=2,dueling=1,hidden=64", (10, 10)), ("mlp", (4,)),
    ("mlp:hidden=32,layers=1", (10, 10)), ("mlp:layers=3,dueling=1", (7,)), ("mlp:layers=0", (3, 5, 5)),
    ("impala:k=1", (3, 64, 48)), ("nature:k=1", (2, 36, 36)), ("impala:k=0.5", (29, 29)),
])
@pytest.mark.parametrize("backend", ["script", "eager"])
def test_small_observations_build_count_and_run(spec, obs_shape, backend):
    torch.manual_seed(0)
    model = build_model(spec, 2, 5, obs_shape=obs_shape)
    assert model.obs_shape == obs_shape
    assert count_parameters(spec, 2, 5, obs_shape=obs_shape) == n_params(model)
    x = example_input(model, 3)
    assert x.shape == (3, 2, *obs_shape)
    assert x.dtype == (torch.float32 if len(obs_shape) == 1 else torch.uint8)
    with torch.no_grad():
        ref = model(x)
        got = load_for_inference(model, backend=backend)(x)
    assert ref.shape == (3, 5)
    torch.testing.assert_close(got, ref)
    assert str(parse_model_spec(model.spec)) == model.spec


def test_minatar_net_is_the_papers():
    # Young & Tian 2019: conv 3x3, 16 channels -> 128 hidden units -> actions; 4 channels of 10x10 in, 6 actions
    model = build_model("minatar", 1, 6, obs_shape=(4, 10, 10))
    assert [tuple(p.shape) for p in model.parameters()] == [(16, 4, 3, 3), (16,), (128, 1024), (128,), (6, 128), (6,)]
    assert str(parse_model_spec("mlp")) == "mlp" and str(parse_model_spec("mlp:hidden=64,layers=1")) == "mlp:hidden=64,layers=1"


@pytest.mark.parametrize("spec,minimum", [("impala:k=1", 29), ("impala:k=1,deep=1", 53), ("nature", 36), ("minatar", 3)])
def test_too_small_frames_name_the_minimum(spec, minimum):
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
        build_model(spec, 1, 3, obs_shape=(minimum - 1, minimum - 1))
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
        count_parameters(spec, 1, 3, obs_shape=(4, minimum - 1, minimum))
    build_model(spec, 1, 3, obs_shape=(minimum, minimum))


def test_conv_nets_refuse_vectors_and_mlp_uses_them_unscaled():
    for spec in ("impala", "nature", "minatar"):
        with pytest.raises(ValueError, match="use 'mlp' for vectors"):
            build_model(spec, 4, 2, obs_shape=(8,))
    model = build_model("mlp:layers=0", 1, 1, obs_shape=(2,))
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.head.bias.zero_()
    assert model(torch.tensor([[[3.0, 4.0]]])).item() == pytest.approx(7.0)  # vectors go in as they are
    pixels = build_model("mlp:layers=0", 1, 1, obs_shape=(1, 2))
    with torch.no_grad():
        pixels.head.weight.fill_(1.0)
        pixels.head.bias.zero_()
    assert pixels(torch.tensor([[[[255, 255]]]], dtype=torch.uint8)).item() == pytest.approx(2.0)  # frames by 1/255


def test_model_scales_uint8_frames_itself():
    model = build_model("nature:k=1", 1, 3)
    x = example_input(model, 2)
    assert torch.equal(model(x), model(x.float()))  # same 0..255 scale whatever the dtype


def test_spec_round_trips_and_aliases():
    assert str(parse_model_spec("impala:k=7")) == "impala:k=7"
    assert parse_model_spec("impala-deep:k=7") == parse_model_spec("impala:k=7,deep=1")
    assert str(parse_model_spec(" Impala : k=7 , dueling=true ")) == "impala:k=7,dueling=1"
    assert parse_model_spec("nature").k == 2.0
    s = parse_model_spec("impala:k=1.5,deep=1,dueling=1,hidden=256")
    assert parse_model_spec(str(s)) == s
    assert build_model(s, 1, 6).spec == str(s)


@pytest.mark.parametrize("spec,message", [
    ("resnet:k=1", "unknown model 'resnet'"),
    ("impala:width=2", "unknown key 'width'; impala accepts k, deep, dueling, hidden"),
    ("nature:deep=1", "unknown key 'deep'"),
    ("impala:k=seven", "k='seven' is not a number"),
    ("impala:k=0", "gives no channels"),
    ("impala:k=1,k=2", "given twice"),
    ("impala:dueling=maybe", "not a boolean"),
    ("impala:k", "is not key=value"),
    ("impala:hidden=0", "hidden=0 must be a positive integer"),
])
def test_bad_specs_raise_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_model_spec(spec)


def test_bad_dimensions_raise_clearly():
    with pytest.raises(ValueError, match="in_frames must be a positive integer"):
        build_model("impala:k=1", 0, 6)
    with pytest.raises(ValueError, match="n_actions must be a positive integer"):
        count_parameters("impala:k=1", 1, 0)
    with pytest.raises(ValueError, match="too small"):
        build_model("impala:k=1,deep=1", 1, 6, frame_size=(32, 32))


@pytest.mark.parametrize("spec", ["impala:k=0.5", "impala:k=0.5,deep=1,dueling=1", "nature"])
@pytest.mark.parametrize("backend,frozen", [("script", False), ("script", True), ("export", False), ("eager", False)])
def test_backends_give_the_eager_q_values(spec, backend, frozen):
    torch.manual_seed(0)
    model = build_model(spec, 4, 6)
    x = example_input(model, 3, seed=1)
    with torch.no_grad():
        ref = model(x)
        runner = load_for_inference(model, "cpu", backend=backend, frozen=frozen)
        torch.testing.assert_close(runner(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(runner(x[:1]), ref[:1], rtol=1e-5, atol=1e-5)  # batch is dynamic


@pytest.mark.parametrize("fmt,backend", [("checkpoint", "script"), ("checkpoint", "eager"), ("checkpoint", "export"),
                                         ("script", "script"), ("export", "export")])
def test_saved_models_load_with_each_backend(tmp_path, fmt, backend):
    torch.manual_seed(0)
    model = build_model("impala:k=0.5", 2, 5)
    path = tmp_path / ("m.pt2" if fmt == "export" else "m.pt")
    save_model(model, path, format=fmt)
    x = example_input(model, 2)
    with torch.no_grad():
        torch.testing.assert_close(load_for_inference(path, "cpu", backend=backend)(x), model(x))


def test_load_for_inference_rejects_mismatches(tmp_path):
    model = build_model("nature:k=1", 1, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        load_for_inference(model, backend="onnx")
    with pytest.raises(ValueError, match="frozen=True needs backend='script'"):
        load_for_inference(model, backend="eager", frozen=True)
    save_model(model, tmp_path / "s.pt", format="script")
    with pytest.raises(ValueError, match="TorchScript archive"):
        load_for_inference(tmp_path / "s.pt", backend="eager")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a model file"):
        load_for_inference(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_for_inference(tmp_path / "missing.pt")


def test_measure_latency_reports_ordered_percentiles():
    threads = torch.get_num_threads()
    r = measure_latency("nature:k=1", "cpu", batch=1, iters=8, warmup=1)
    assert r["params"] == count_parameters("nature:k=1", 1, 6)
    assert 0 < r["min"] <= r["p50"] <= r["p99"] <= r["max"] and r["min"] <= r["mean"] <= r["max"]
    assert r["spec"] == "nature:k=1" and r["iters"] == 8 and r["backend"] == "script"
    assert torch.get_num_threads() == threads  # restored


def test_bench_models_cli_prints_table_and_json(capsys):
    import argparse
    import json

    from rtcore import benchmarks

    parser = argparse.ArgumentParser()
    benchmarks.add_arguments(parser)
    args = parser.parse_args(["models", "--models", "nature:k=1", "--backends", "script,frozen", "--iters", "3",
                              "--warmup", "1", "--json"])
    assert benchmarks.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert [r["backend"] for r in figures["results"]] == ["script", "frozen"]
    assert all(r["spec"] == "nature:k=1" and r["p99_ms"] >= r["p50_ms"] > 0 for r in figures["results"])
    assert any(line.startswith("nature:k=1") for line in out)
    args = parser.parse_args(["models", "--models", "bogus", "--quick"])
    assert benchmarks.main(args) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend,frozen", [("script", False), ("script", True), ("export", False), ("eager", False)])
def test_cuda_backends_give_the_cpu_q_values(backend, frozen):
    torch.manual_seed(0)
    model = build_model("impala:k=1,dueling=1", 4, 6)
    x = example_input(model, 3)
    with torch.no_grad():
        ref = model(x)
        runner = load_for_inference(model, "cuda", backend=backend, frozen=frozen)
        torch.testing.assert_close(runner(x.cuda()).cpu(), ref, rtol=1e-3, atol=1e-3)
    r = measure_latency(model, "cuda", iters=5, warmup=2, backend=backend, frozen=frozen)
    assert 0 < r["p50"] <= r["p99"]


def test_load_for_inference_leaves_the_callers_module_alone():
    model = build_model("nature:k=1", 1, 3)
    before = [p.data_ptr() for p in model.parameters()]
    runner = load_for_inference(model, "cpu", backend="script")
    assert [p.data_ptr() for p in model.parameters()] == before
    assert not set(before) & {p.data_ptr() for p in runner.parameters()}
