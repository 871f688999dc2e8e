"""The package layout holds: lower layers never import higher ones, nothing imports a command
module, no import cycle, no long functions. Read from the source (ast), so it also sees the
imports placed inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from experiments.__main__ import COMMANDS
from tests.helpers import REPO

#: A package may import its own modules and those of lower layers only.
LAYERS = {
    "experiments.errors": 0,
    "experiments.seed_tasks": 0,
    "experiments.tracking": 1,
    "experiments.training": 2,
    "experiments.search": 3,
    "experiments.reports": 4,
    "experiments.inference": 4,
    "experiments.services": 4,
    "experiments.bench": 4,
    "experiments.__main__": 5,
}
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for folder in ("experiments", "models", "datamodules")
        for p in sorted((REPO / folder).rglob("*.py"))
    }


MODULES = project_modules()


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when that is a module, else names of pkg
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return prefix, layer
    return None


def test_every_experiments_module_has_a_layer():
    unplaced = [m for m in MODULES if m.startswith("experiments.") and layer_of(m) is None]
    assert unplaced == [], f"modules outside every layer of LAYERS: {unplaced}"


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, imported in GRAPH.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for other in imported:
            theirs = layer_of(other)
            if theirs is None or theirs[0] == mine[0]:
                continue
            if theirs[1] >= mine[1]:
                wrong.append(f"{module} (layer {mine[1]}) imports {other} (layer {theirs[1]})")
    assert wrong == []


def test_no_module_imports_a_command_module():
    commands = {target for target, _ in COMMANDS.values()} - {"experiments.__main__"}
    wrong = [
        f"{module} imports the command module {other}"
        for module, imported in GRAPH.items()
        for other in imported & commands
        if module != "experiments.__main__"
    ]
    assert wrong == []


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(GRAPH[module]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith("experiments.bench"))
)
def test_no_function_over_80_lines(module):
    tree = ast.parse(MODULES[module].read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_the_checks_see_what_they_check():
    """Guards against a checker that finds nothing: known edges and known modules exist."""
    assert "experiments.training.runner" in GRAPH["experiments.training.cli"]
    assert "experiments.tracking.store" in GRAPH["experiments.training.runner"]
    assert "experiments.search.cli" in {target for target, _ in COMMANDS.values()}
    assert len([m for m in MODULES if m.startswith("experiments.")]) > 30
