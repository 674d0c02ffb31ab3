import pytest

import rtcore
from rtcore import _core


def test_import_exposes_version_and_private_core():
    assert rtcore.__version__
    assert _core.__doc__ and "private" in _core.__doc__


def test_unknown_public_name_is_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rtcore.Nope  # noqa: B018


@pytest.mark.parametrize("bad", ["", "a/b", "sp ace", "x" * 201])
def test_bad_segment_name_is_value_error(bad):
    with pytest.raises(ValueError, match="segment name"):
        _core.check_segment_name(bad)


def test_missing_segment_does_not_exist():
    assert not _core.segment_exists("rtcore-definitely-not-there")
    _core.unlink_segment("rtcore-definitely-not-there")  # no error when already gone


def test_simulate_stays_the_function_after_every_submodule_is_imported():
    """A public function must not share its name with a submodule: importing the submodule would
    replace the package attribute (rtcore.simulate became a module mid-suite once)."""
    import importlib
    import pkgutil

    for mod in pkgutil.walk_packages(rtcore.__path__, "rtcore."):
        if mod.name == "rtcore.__main__":  # runs the CLI
            continue
        importlib.import_module(mod.name)
    for name in rtcore.__all__:
        value = getattr(rtcore, name)
        assert not isinstance(value, type(rtcore)), f"rtcore.{name} is a module, expected the public object"


def test_cli_options_without_a_command_go_to_the_default_job(monkeypatch):
    """`rtcore --seconds 5` runs the default job (`rtcore run`) with that option."""
    import rtcore.agent.runner
    from rtcore.cli import main

    seen = {}
    monkeypatch.setattr(rtcore.agent.runner, "main", lambda args: seen.setdefault("seconds", args.seconds) and 0)
    assert main(["--seconds", "5"]) == 0
    assert seen["seconds"] == 5.0
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0


def test_cli_maps_only_bad_options_to_exit_2(monkeypatch, capsys):
    """A bad option exits 2 with one line; a failure of the work itself, even a ValueError from inside
    the run, is not a bad option and propagates."""
    import rtcore.agent.runner
    from rtcore.cli import main

    assert main(["run", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtcore run: error: workers = '0'") and err.count("\n") == 1

    def failing_run(cfg):
        raise ValueError("a shape mismatch inside the run")

    monkeypatch.setattr(rtcore.agent.runner, "check_options", lambda cfg: None)  # no env or model to resolve
    monkeypatch.setattr(rtcore.agent.runner, "run", failing_run)
    with pytest.raises(ValueError, match="inside the run"):
        main(["run", "--seconds", "1"])


def test_runtime_state_errors_are_not_value_errors():
    """A bad argument is a ValueError; a call the object's state forbids is a StateError."""
    assert issubclass(rtcore.LayoutError, ValueError)
    assert issubclass(rtcore.StateError, RuntimeError) and not issubclass(rtcore.StateError, ValueError)
    for cls in (rtcore.ClosedError, rtcore.SlotError, rtcore.BusyError):
        assert issubclass(cls, rtcore.StateError) and not issubclass(cls, ValueError), cls
        assert cls.__module__ == "rtcore._core" and cls.__doc__, cls  # raised by the core, documented
    assert "WorkerDied" not in rtcore.__all__
