"""The package's structure: no import cycles (module-level or inside functions), modules of a readable
size, and the layers of DESIGN.md (shared objects below the agent, the agent below the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rtcore

PKG = Path(rtcore.__file__).parent
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The rtcore module a dotted name lives in (a module, or the package that defines the attribute)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Every rtcore module that ``module`` imports, at module level or inside a function."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            if n.split(".")[0] != "rtcore":
                continue
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_hidden_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    graph = {m: imports_of(m) for m in MODULES}
    # a package's __init__ re-exporting its own submodules is not a cycle of the design
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("layer,forbidden", [
    ("rtcore.shared", ("rtcore.agent", "rtcore.envs", "rtcore.models", "rtcore.cli")),
    ("rtcore.models", ("rtcore.agent", "rtcore.envs", "rtcore.cli")),
    ("rtcore.envs", ("rtcore.agent", "rtcore.cli")),
    ("rtcore.agent", ("rtcore.cli", "rtcore.cluster", "rtcore.launch")),
    ("rtcore.cluster", ("rtcore.cli", "rtcore.launch")),
])
def test_layers_import_only_downwards(layer, forbidden):
    bad = sorted((m, d) for m in MODULES if m == layer or m.startswith(layer + ".")
                 for d in imports_of(m) if d.startswith(forbidden))
    assert not bad, f"{layer} imports from a layer above it: {bad}"


def test_long_modules_say_why_at_the_top():
    """A module over ~450 lines states the reason in its docstring (a line starting 'Length:')."""
    long = {}
    for m, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if not any(line.strip().startswith("Length:") for line in doc.splitlines()):
                long[m] = text.count("\n")
    assert not long, f"modules over {MAX_LINES} lines without a 'Length:' reason in the docstring: {long}"
