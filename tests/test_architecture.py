"""The layering of ARCHITECTURE.md, checked on the import graph of ``src/``.

The graph is built with ``ast`` from every import statement in every module, function-level and
``TYPE_CHECKING`` imports included. Two stacks, each in the order below (bottom first), share
nothing; the command line sits above both. A module may import modules of its own layer or of a
layer below in its own stack; nothing imports the command line; no import cycle exists anywhere.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Patterns: a module name, or "name.*" for a package and everything in it.
LIBRARY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("span_profiles._core.*", "span_profiles._otel_compat", "span_profiles._settings")),
    ("hooks", ("span_profiles._hooks.*",)),
    ("samplers", ("span_profiles._samplers.*", "span_profiles._placement")),
    (
        "wiring",
        (
            "span_profiles",
            "span_profiles._instrument",
            "span_profiles._profiler",
            "span_profiles._doctor",
            "span_profiles.logging",
            "span_profiles.testing",
        ),
    ),
    (
        "adapter core",
        (
            "span_profiles._adapter",
            "span_profiles._request",
            "span_profiles._startup",
            "span_profiles._otel_http",
        ),
    ),
    (
        "adapters",
        (
            "span_profiles.asgi",
            "span_profiles.wsgi",
            "span_profiles.fastapi",
            "span_profiles.flask",
            "span_profiles.django.*",
            "span_profiles.gunicorn",
            "span_profiles.otel_instrumentor",
        ),
    ),
)
RECEIVER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("span_profiles.receiver.model",)),
    ("ingest", ("span_profiles.receiver.ingest.*",)),
    ("storage", ("span_profiles.receiver.storage.*",)),
    ("query", ("span_profiles.receiver.query.*",)),
    ("web", ("span_profiles.receiver.web.*",)),
    ("public API", ("span_profiles.receiver",)),
)
COMMAND = ("span_profiles.cli.*",)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _target(name: str) -> str | None:
    """The module of ``MODULES`` an imported name lives in (a package's ``__init__`` for a
    name defined there), ``None`` outside ``src/``."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import statement of ``module``, anywhere in it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from package import module` imports that module; `from module import name`, it.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                yield target, node.lineno


GRAPH = {module: sorted(set(_imports(module))) for module in MODULES}


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        package = pattern[:-2]
        return module == package or module.startswith(package + ".")
    return module == pattern


def _place(module: str) -> tuple[str, int, str]:
    """``(stack, rank, layer)`` of a module."""
    if any(_matches(module, pattern) for pattern in COMMAND):
        return "command", 0, "command"
    for stack, layers in (("library", LIBRARY), ("receiver", RECEIVER)):
        for rank, (layer, patterns) in enumerate(layers):
            if any(_matches(module, pattern) for pattern in patterns):
                return stack, rank, layer
    raise LookupError(module)


def test_every_module_has_a_layer() -> None:
    """Each module of ``src/`` belongs to a layer above (a new module must be placed)."""
    unplaced = []
    for module in MODULES:
        try:
            _place(module)
        except LookupError:
            unplaced.append(module)
    assert unplaced == []


def test_no_import_points_up_or_across() -> None:
    """No module imports a layer above its own, the other stack, or the command line."""
    wrong = []
    for module, imports in GRAPH.items():
        stack, rank, layer = _place(module)
        for target, line in imports:
            to_stack, to_rank, to_layer = _place(target)
            if stack == "command" and to_stack != "command":
                continue
            if to_stack != stack or to_rank > rank:
                wrong.append(
                    f"{module}:{line} ({stack} {layer}) imports {target} ({to_stack} {to_layer})"
                )
    assert wrong == []


def test_no_import_cycle() -> None:
    """The import graph has no cycle, function-level imports included."""
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target, _ in GRAPH[module]:
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize(
    ("source", "imports", "found"),
    [
        ("import a.b\n", "a.b", True),
        ("def f():\n    from a import b\n", "a.b", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a.b import c\n",
            "a.b",
            True,
        ),
        ("from . import b\n", "a.b", True),
        ("import os\n", "a.b", False),
    ],
)
def test_the_graph_sees_every_kind_of_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, imports: str, found: bool
) -> None:
    """Module-level, function-level, TYPE_CHECKING and relative imports are all edges."""
    package = tmp_path / "a"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "b.py").write_text("")
    (package / "m.py").write_text(source)
    monkeypatch.setattr(
        "tests.test_architecture.MODULES",
        {"a": package / "__init__.py", "a.b": package / "b.py", "a.m": package / "m.py"},
    )
    assert any(target == imports for target, _ in _imports("a.m")) is found
