"""Every command in the README's ``bash`` blocks runs as written.

The default suite parses every command: each ``rtcore`` command through the CLI's own parser (and, for
``rtcore run``, the run config's validation; for ``rtcore bench models``, the model specs), each
``pip install`` target and extra against pyproject.toml, each ``pytest`` command by collecting with
its arguments, and it runs the quick ones (``rtcore simulate``, ``rtcore bench models --quick``) as
written, through bash. ``pytest -m slow`` runs the rest as written: each block of ``rtcore`` commands
in order in a scratch directory (the "Try it" block has multi-minute game runs), the install lines in a fresh virtual environment, the
CMake lines in a copy of the source tree. A README command that no rule here covers fails the suite,
so a new command gets checked too.

``pytest`` lines are collected, not run, in both suites: running the suite from inside itself would
recurse; CI runs them as written.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rtcore

ROOT = Path(__file__).resolve().parent.parent
# Where the rtcore this session imports lives: the source tree (a developer's in-place build on
# PYTHONPATH) or site-packages (CI installs the package); README commands must run that one.
IMPORTED_FROM = str(Path(rtcore.__file__).resolve().parent.parent)
README = ROOT / "README.md"

# How each README command is checked: (pattern on the command, check).
#   run   - run as written in the default suite (quick)
#   parse - parsed in the default suite, run as written by the slow tests
#   pytest- collected with its arguments (both suites)
RULES: list[tuple[str, str]] = [
    (r"^rtcore simulate\b", "run"),
    (r"^rtcore bench models\b.*--quick\b", "run"),
    (r"^rtcore\b", "parse"),
    (r"^pip install\b", "parse"),
    (r"^(\w+=\S+\s+)*pytest\b", "pytest"),
    (r"^(cmake|ctest)\b", "parse"),
    (r"^python bench/\w+\.py\b", "parse"),
]


def bash_blocks() -> list[list[str]]:
    """The README's ```bash blocks, each a list of commands (comments and blank lines dropped)."""
    text = README.read_text()
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = []
        for raw in body.replace("\\\n", " ").splitlines():  # continuation lines joined, as bash reads them
            tokens = shlex.split(raw, comments=True)
            if tokens:
                lines.append(raw)
        blocks.append(lines)
    return blocks


def commands() -> list[str]:
    """Every simple command of every block: lines split at ``&&``, comments stripped."""
    out = []
    for block in bash_blocks():
        for line in block:
            out += _unquoted_split(line.split(" #")[0], "&&")
    return out


def _unquoted_split(line: str, sep: str) -> list[str]:
    parts, cur, quote = [], "", None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif line.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        cur += c
        i += 1
    parts.append(cur)
    return [p for p in (q.strip() for q in parts) if p]


def rule(cmd: str) -> str:
    for pattern, kind in RULES:
        if re.search(pattern, cmd):
            return kind
    raise AssertionError(f"README command {cmd!r} is covered by no rule in tests/test_readme.py: add one")


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory) -> dict[str, str]:
    """The environment README commands run in: `rtcore` on PATH (a shim to this interpreter when the
    package is not installed) and this tree importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [IMPORTED_FROM, env.get("PYTHONPATH", "")]))
    env["RTCORE_README_TEST"] = "1"
    bindir = tmp_path_factory.mktemp("bin")
    if shutil.which("rtcore") is None:
        shim = bindir / "rtcore"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rtcore "$@"\n')
        shim.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_readme_has_commands_and_every_one_is_covered():
    cmds = commands()
    assert any(c.startswith("rtcore run") for c in cmds) and any(c.startswith("pip install") for c in cmds)
    for c in cmds:
        rule(c)


def check_rtcore_parses(argv: list[str]) -> None:
    """What `rtcore ...` does before it starts working: the CLI's dispatch, its parser, and the checks
    each subcommand makes of its options. Raises (or exits non-zero) where the command would."""
    from rtcore import cli

    args_in = argv[1:]
    if not args_in or (args_in[0].startswith("-") and args_in[0] not in ("-h", "--help", "--version")):
        args_in = ["run", *args_in]
    command = next((a for a in args_in if not a.startswith("-")), None)
    parser = cli.build_parser(command if command in cli.SUBCOMMANDS else None)
    try:
        args = parser.parse_args(args_in)
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)!r} does not parse (exit {exc.code})") from None
    assert getattr(args, "_main", None) is not None, f"{shlex.join(argv)!r} names no command"
    if command == "run":
        from rtcore.agent.config import config_from_args

        config_from_args(args)
    elif command == "bench":
        from rtcore.models import parse_model_spec
        from rtcore.models.spec import split_model_specs

        for item in args.models:
            for spec in split_model_specs(item):
                parse_model_spec(spec)


def pyproject_extras() -> set[str]:
    """The names under [project.optional-dependencies] (read without tomllib, which needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, flags=re.S | re.M)
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section.group(1), flags=re.M))


def check_pip_parses(argv: list[str]) -> None:
    """`pip install` of pinned requirements, this tree (`.`) and its extras (`.[a,b]`), with flags pip knows."""
    assert argv[:2] == ["pip", "install"]
    extras_known = pyproject_extras()
    targets = [a for a in argv[2:] if a not in ("-e", "--no-build-isolation")]
    assert all(not a.startswith("-") for a in targets), f"unexpected pip option in {argv}"
    for t in targets:
        m = re.fullmatch(r"(\.|rtcore)(?:\[([\w,-]+)\])?", t)  # this tree, or rtcore by name, with extras
        if m:
            missing = set(filter(None, (m.group(2) or "").split(","))) - extras_known
            assert not missing, f"{t!r}: pyproject.toml has no extra(s) {sorted(missing)}"
        else:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+(==[\w.+-]+)?", t), f"{t!r} is not a requirement pip takes"


def run_dirs_made() -> set[str]:
    """Run directories README commands create (`--run-dir X`): later commands may read them."""
    made = set()
    for c in commands():
        argv = shlex.split(c)
        made |= {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--run-dir"}
    return made


@pytest.mark.parametrize("cmd", [c for c in commands() if rule(c) == "parse"])
def test_readme_command_parses(cmd, tmp_path, monkeypatch):
    argv = shlex.split(cmd)
    monkeypatch.chdir(tmp_path)
    if argv[0] == "rtcore":
        try:
            check_rtcore_parses(argv)
        except FileNotFoundError as exc:  # reads a run an earlier README command makes: the slow test runs both
            if not any(d in str(exc) for d in run_dirs_made()):
                raise
    elif argv[0] == "pip":
        check_pip_parses(argv)
    elif argv[0] == "python":  # a bench script: its --help parses, and names every option the command gives
        p = subprocess.run([sys.executable, str(ROOT / argv[1]), "--help"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": IMPORTED_FROM})
        assert p.returncode == 0, f"{argv[1]} --help exited {p.returncode}: {p.stderr[-1000:]}"
        for a in argv[2:]:
            if a.startswith("--"):
                assert a.split("=")[0] in p.stdout, f"{argv[1]} has no option {a}"
    else:
        assert shutil.which(argv[0]), f"{argv[0]} is not installed"
        assert (ROOT / "CMakeLists.txt").exists()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("cmd", [c for c in commands() if rule(c) == "run"])
def test_readme_quick_command_runs_as_written(cmd, shell_env, tmp_path):
    check_rtcore_parses(shlex.split(cmd))
    p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=590)
    assert p.returncode == 0, f"{cmd!r} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert p.stdout.strip(), f"{cmd!r} printed nothing"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cmd", [c for c in commands() if rule(c) == "pytest"])
def test_readme_pytest_command_collects(cmd, shell_env):
    # The README's environment assignments and arguments, collected rather than run (see the module doc).
    p = subprocess.run(["bash", "-c", f"{cmd} --collect-only -q -p no:cacheprovider"], cwd=ROOT, env=shell_env,
                       capture_output=True, text=True, timeout=290)
    assert p.returncode in (0, 5), f"{cmd!r} does not collect (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}"


# --- the slow ones, as written ------------------------------------------------------------------------

_nested = pytest.mark.skipif(os.environ.get("RTCORE_README_TEST") == "1",
                             reason="inside a README command already (no recursion)")


@_nested
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_rtcore_blocks_run_as_written(shell_env, tmp_path):
    """Every block of `rtcore` commands ("Try it", keep/resume/play, ...) in order, each block in a
    scratch directory of its own (a later command reads the run an earlier one made)."""
    blocks = [b for b in bash_blocks() if b and all(line.startswith(("rtcore ", "python bench/")) for line in b)]
    assert blocks
    for n, block in enumerate(blocks):
        cwd = tmp_path / f"block{n}"
        cwd.mkdir()
        for line in block:
            cmd = line.replace("python bench/", f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT))}/bench/", 1)
            p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=shell_env, capture_output=True, text=True,
                               timeout=1500)
            assert p.returncode == 0, f"{line!r} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"


def _source_copy(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    return dst


@_nested
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_install_and_build_lines_run_as_written(shell_env, tmp_path):
    """Install lines in a fresh virtual environment (with this interpreter's packages visible, so only
    rtcore itself is built), then the CMake lines, each in a clean copy of the source tree. `pytest`
    after an install is collected, not run (see the module doc)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in shell_env.items() if k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env["PATH"]])
    env["VIRTUAL_ENV"] = str(venv)
    for i, line in enumerate(line for b in bash_blocks() for line in b if re.match(r"(pip|cmake|ctest)\b", line)):
        src = _source_copy(tmp_path / f"src{i}")
        code = line.split(" #")[0]
        parts = _unquoted_split(code, "&&")
        parts = [f"{p} --collect-only -q" if re.match(r"pytest\b", p) else p for p in parts]
        p = subprocess.run(["bash", "-c", " && ".join(parts)], cwd=src, env=env, capture_output=True, text=True,
                           timeout=3000)
        assert p.returncode == 0, f"{line!r} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
