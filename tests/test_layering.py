"""Imports run one way: the program never loads the driver, the driver's core no target's insides.

Read from the source with `ast`, so a new import that breaks a rule fails here before it is run.
Imports under `if TYPE_CHECKING:` are left out (they never run); imports inside functions count.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.commands import ROOT
from zdd import registry
from zdd.targets import TargetOps, ops_for

PACKAGES = ("zdd", "infra", "policies", "sampleapp")
# Modules both sides import: pure pieces, with no Pulumi and nothing of the driver's.
NEUTRAL = frozenset(
    {
        "zdd",
        "zdd.appspec",
        "zdd.config_file",
        "zdd.environment",
        "zdd.errors",
        "zdd.health",
        "zdd.phases",
        "zdd.postgres",
        "zdd.processes",
        "zdd.registry",
        "zdd.sqlite_files",
        "zdd.supervise",
    }
)
DRIVER_CORE = (
    "zdd.driver",
    "zdd.stack",
    "zdd.actions",
    "zdd.gates",
    "zdd.gatekeeper",
    "zdd.history",
    "zdd.results",
)
# The driver side's modules of one target; the core reaches them only through the registry.
TARGET_OPERATIONS = frozenset(ref.operations.partition(":")[0] for ref in registry.TARGETS.values())


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for statement in child.orelse:
                yield from _import_nodes(statement)
        else:
            yield from _import_nodes(child)


@functools.cache
def imports_of(module: str) -> frozenset[str]:
    """What loading `module` imports by name: submodules where `from package import x` names
    one, else the module itself (third-party names as they are written)."""
    known = _sources()
    found: set[str] = set()
    for node in _import_nodes(ast.parse(known[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = module if known[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".strip(".")
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return frozenset(found)


def _with_packages(module: str) -> set[str]:
    """A module and the packages Python loads before it (`zdd.phases` runs `zdd/__init__`)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@functools.cache
def loads(module: str) -> frozenset[str]:
    """Every project module (and third-party top-level name) that importing `module` loads."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            for loaded in _with_packages(name) if name in _sources() else {name.split(".")[0]}:
                if loaded not in seen:
                    seen.add(loaded)
                    if loaded in _sources():
                        todo.append(loaded)
    return frozenset(seen)


def _modules_under(*packages: str) -> list[str]:
    return [m for m in _sources() if m.split(".")[0] in packages]


def _project(names: frozenset[str]) -> set[str]:
    return {name for name in names if name in _sources()}


@pytest.mark.parametrize("module", _modules_under("infra", "policies"))
def test_the_program_and_the_policies_load_nothing_of_the_driver(module: str) -> None:
    driver_side = {m for m in _project(loads(module)) if m.startswith("zdd") and m not in NEUTRAL}
    assert driver_side == set(), f"{module} loads {sorted(driver_side)}"


@pytest.mark.parametrize("module", sorted(NEUTRAL))
def test_a_neutral_module_loads_no_pulumi_and_only_neutral_modules(module: str) -> None:
    loaded = loads(module)
    assert "pulumi" not in loaded
    assert _project(loaded) <= NEUTRAL, f"{module} loads {sorted(_project(loaded) - NEUTRAL)}"


@pytest.mark.parametrize("module", DRIVER_CORE)
def test_the_drivers_core_loads_no_targets_insides(module: str) -> None:
    insides = {
        m
        for m in _project(loads(module))
        if m.startswith(("infra.local", "infra.azure")) or m in TARGET_OPERATIONS
    }
    assert insides == set(), f"{module} loads {sorted(insides)}"


def test_the_sample_site_imports_nothing_of_the_platform() -> None:
    # It stands for a site the platform did not write: it knows the platform by its documented
    # contract (app spec placeholders, headers), never by its code.
    for module in _modules_under("sampleapp"):
        platform = {m for m in _project(loads(module)) if not m.startswith("sampleapp")}
        assert platform == set(), f"{module} loads {sorted(platform)}"


def test_no_import_circle() -> None:
    graph = {module: _project(imports_of(module)) for module in _sources()}
    circles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                circles.append([*path[path.index(name) :], name])
            elif name not in state:
                visit(name, [*path, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("name", sorted(registry.TARGETS))
def test_every_registered_target_has_a_program_and_operations_on_its_side(name: str) -> None:
    entry = registry.entry(name)
    assert entry.program.startswith("infra.") and entry.operations.startswith("zdd.")
    assert callable(registry.load(entry.program))
    ops = ops_for(name)
    assert isinstance(ops, TargetOps) and ops.name == name


def test_an_unknown_target_is_refused_with_the_registered_names() -> None:
    with pytest.raises(registry.UnknownTarget, match="'mars' is not one of: local, azure"):
        registry.entry("mars")
