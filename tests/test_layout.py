"""The test tree mirrors the package, and its helpers live in one support package.

* a directory of ``tests/`` is named after a module or package of ``span_profiles`` (a leading
  underscore dropped: ``tests/core`` for ``_core``), nested as it is nested, or is one of
  :data:`CATEGORIES`;
* every module that is not a test module (``test_*.py``) or a ``conftest.py`` is in
  ``tests/support/``;
* no test module or conftest imports another test module or conftest: what they share comes from
  ``tests.support``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "span_profiles"
CATEGORIES = {
    "support": "what the tests share",
    "e2e": "end to end through several parts, with the real agent",
    "examples": "the examples/ directory and the demo",
    "browser": "the web UI in a real browser",
}
"""Directories named after what they test rather than a module."""


def _module_paths() -> set[tuple[str, ...]]:
    """Every module and package of span_profiles, as path parts without leading underscores."""
    paths = set()
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for end in range(1, len(parts) + 1):
            paths.add(tuple(part.lstrip("_") for part in parts[:end]))
    return paths


def _is_test(path: Path) -> bool:
    return path.name.startswith("test_") or path.name == "conftest.py"


def test_directories_mirror_the_package() -> None:
    """Each test directory is a module or package of span_profiles at the same place, or a
    category directory."""
    modules = _module_paths()
    wrong = []
    for directory in sorted(p for p in TESTS.rglob("*") if p.is_dir()):
        parts = directory.relative_to(TESTS).parts
        if "__pycache__" in parts or parts[0] == "support":
            continue
        mirrored = tuple(part for part in parts if part not in CATEGORIES)
        if mirrored and mirrored not in modules:
            wrong.append("/".join(parts))
    assert wrong == []


def test_helpers_live_in_the_support_package() -> None:
    """Outside tests/support/ there are only test modules and conftest files."""
    strays = [
        str(path.relative_to(TESTS))
        for path in sorted(TESTS.rglob("*.py"))
        if "support" not in path.relative_to(TESTS).parts and not _is_test(path)
    ]
    assert strays == []


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    """Test modules and conftest files import from tests.support only, never each other."""
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        if not _is_test(path):
            continue
        for name in sorted(_imported(path)):
            if name == "tests" or (
                name.startswith("tests.") and not name.startswith("tests.support")
            ):
                wrong.append(f"{path.relative_to(TESTS)} imports {name}")
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from tests.receiver.query.test_reader import A\n", True),
        ("def f():\n    from tests import conftest\n", True),
        ("from tests.support.receiver import sample\n", False),
    ],
)
def test_the_check_sees_imports_of_test_modules(tmp_path: Path, source: str, found: bool) -> None:
    """An import of a test module, also inside a function, is seen; one of the support package
    is not."""
    module = tmp_path / "test_x.py"
    module.write_text(source)
    names = _imported(module)
    assert (
        any(
            n == "tests" or (n.startswith("tests.") and not n.startswith("tests.support"))
            for n in names
        )
        is found
    )
