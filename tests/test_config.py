"""RunConfig: every field documented, the CLI generated from it, and every bad value refused clearly."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from rtcore.agent.config import RunConfig, add_config_arguments, config_from_args, epsilon_at, field_docs


def parser() -> argparse.ArgumentParser:
    from rtcore.agent.runner import add_arguments

    p = argparse.ArgumentParser(prog="rtcore run")
    add_arguments(p)
    return p


def test_every_field_has_a_docstring():
    docs = field_docs(RunConfig)
    names = [f.name for f in dataclasses.fields(RunConfig)]
    missing = [n for n in names if not docs.get(n)]
    assert not missing, f"fields without a docstring: {missing}"


def test_help_lists_every_field_with_its_docstring():
    text = parser().format_help()
    flat = " ".join(text.split())
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        first_words = " ".join(field_docs()[f.name].split()[:3])
        assert first_words in flat, (f.name, first_words)


def test_no_arguments_give_the_default_config():
    cfg = config_from_args(parser().parse_args([]))
    assert cfg == RunConfig()


def test_cli_parses_every_kind_of_field():
    args = parser().parse_args([
        "--env", "ALE/Boxing-v5", "--model", "impala:k=7", "--workers", "auto", "--learners", "2",
        "--seconds", "600", "--inference-delay", "0.05", "--no-double-dqn", "--frequency", "59.7275",
        "--tau-theta", "none", "--mode", "sequential", "--sequential-order", "learninf", "--quiet", "--json",
    ])
    cfg = config_from_args(args)
    assert cfg.env == "ALE/Boxing-v5" and cfg.model == "impala:k=7" and cfg.workers == "auto"
    assert cfg.learners == 2 and cfg.seconds == 600.0 and cfg.inference_delay == 0.05
    assert cfg.double_dqn is False and cfg.frequency == 59.7275 and cfg.tau_theta is None
    assert cfg.mode == "sequential" and cfg.sequential_order == "learninf" and cfg.quiet and cfg.json
    assert cfg.fixed_workers is None


def test_cli_rejects_an_unknown_mode():
    with pytest.raises(SystemExit):
        parser().parse_args(["--mode", "parallel"])


@pytest.mark.parametrize(
    "change, field",
    [
        ({"workers": "0"}, "workers"),
        ({"workers": "many"}, "workers"),
        ({"seconds": 0.0}, "seconds"),
        ({"inference_delay": -0.1}, "inference_delay"),
        ({"epsilon_end": 1.5}, "epsilon_end"),
        ({"learners": -1}, "learners"),
        ({"batch_size": 64, "learning_starts": 32}, "learning_starts"),
        ({"replay_capacity": 10, "learning_starts": 32}, "replay_capacity"),
        ({"gamma": 1.01}, "gamma"),
        ({"n_step": 0}, "n_step"),
        ({"device": "tpu"}, "device"),
        ({"backend": "onnx"}, "backend"),
        ({"stagger": "min"}, "stagger"),
        ({"mode": "sequential", "workers": "3"}, "workers"),
        ({"frequency": -60.0}, "frequency"),
        ({"frame_stack": 0}, "frame_stack"),
    ],
)
def test_bad_values_name_the_field(change, field):
    cfg = dataclasses.replace(RunConfig(), **change)
    with pytest.raises(ValueError, match=rf"^{field} = "):
        cfg.validate()


def test_dict_round_trip_and_unknown_keys():
    cfg = RunConfig(env="ALE/Breakout-v5", learners=3, tau_theta=0.1)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({**cfg.to_dict(), "lerners": 2})


def test_epsilon_schedule_is_linear_then_flat():
    assert epsilon_at(0, 1.0, 0.05, 100) == 1.0
    assert epsilon_at(50, 1.0, 0.05, 100) == pytest.approx(0.525)
    assert epsilon_at(100, 1.0, 0.05, 100) == 0.05
    assert epsilon_at(10**9, 1.0, 0.05, 100) == 0.05
    assert epsilon_at(0, 1.0, 0.05, 0) == 0.05


def test_generated_options_do_not_clash_with_a_plain_parser():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    assert p.parse_args(["--workers", "3"]).workers == "3"


def test_help_groups_every_option_under_a_section():
    from rtcore.agent.config import field_sections

    sections = field_sections(RunConfig)
    assert set(sections) == {f.name for f in dataclasses.fields(RunConfig)}
    text = parser().format_help()
    for title in ("what to play, with what:", "acting:", "learning:", "the run:"):
        assert title in text


def test_a_run_with_more_parameter_readers_than_the_store_allows_names_the_limit():
    from rtcore.shared.params import MAX_READERS

    RunConfig(workers="72", learners=33).validate()  # the paper's 100M run: 113 readers
    RunConfig(workers="auto", max_workers=256, learners=33).validate()
    with pytest.raises(ValueError, match=f"limit of {MAX_READERS} reader slots"):
        RunConfig(workers=str(MAX_READERS), learners=1).validate()
    with pytest.raises(ValueError, match="max_workers"):
        RunConfig(workers="auto", max_workers=MAX_READERS, learners=1).validate()
    with pytest.raises(ValueError, match="param_buffers"):
        RunConfig(param_buffers=1).validate()


def test_inference_delay_schedule_is_read_and_checked(tmp_path):
    from rtcore.agent.config import read_delay_schedule

    good = tmp_path / "delays.txt"
    good.write_text("# t  delay\n4 0.05\n0 0.025\n")
    assert read_delay_schedule(str(good)) == [(0.0, 0.025), (4.0, 0.05)]
    RunConfig(inference_delay_schedule=str(good)).validate()
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.025\n3 fast\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: '3 fast': expected 'SECONDS DELAY'"):
        RunConfig(inference_delay_schedule=str(bad)).validate()
