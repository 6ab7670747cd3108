"""Test sessions: lint + types, the suite on Python 3.10 to 3.15, the core without extras, and a
fast loop for development.

The tools come from ``[dependency-groups]`` in ``pyproject.toml`` (``test-core``, ``test``,
``lint``), so ``pip install --group test`` (pip >= 25.1) or uv install the same set as nox does.

``nox`` runs the default sessions (what CI runs); ``nox -s fast`` runs every test that starts no
subprocess, server or real agent (``-m "not e2e"``), in seconds (``nox -Rs fast`` after the first
run: it skips the install step).

Python 3.14 and 3.15 come from ``scripts/install-pythons.sh`` (``scripts/test.sh`` runs it and puts
them on PATH). On 3.15 the ``pyroscope`` extra installs nothing (pyroscope-io has no build for it,
see ``pyproject.toml``): the tests that need the real agent are skipped there, each with that
reason (``tests/conftest.py``), and everything else runs.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_existing_virtualenvs = True
# A session whose Python is missing must fail the run, not be skipped into a green one.
nox.options.error_on_missing_interpreters = True
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
nox.options.sessions = ["lint", "core", *(f"tests-{version}" for version in PYTHONS)]

PYPROJECT = nox.project.load_toml("pyproject.toml")
CORE_TESTS = (
    "tests/core",
    "tests/settings",
    "tests/instrument",
    "tests/test_import_without_extras.py",
)
EXTRAS = "pyroscope,trio,fastapi,django,flask,receiver"


def _groups(*names: str) -> list[str]:
    """The requirements of the named dependency groups of ``pyproject.toml``."""
    return [req for name in names for req in nox.project.dependency_groups(PYPROJECT, name)]


# One session's whole pytest run. A test whose teardown hangs after pytest-timeout has fired once
# (a server waiting for a connection that never closes) would otherwise hold CI until its own limit
# and lose every later session's result; a suite takes ~5 min on this machine, even when loaded.
SESSION_LIMIT = "25m"


def _pytest(session: nox.Session, *args: str) -> None:
    """pytest with ``args`` and the session's own arguments (exit 5, no test collected, fails),
    ended after ``SESSION_LIMIT`` (coreutils ``timeout``: exit 124, the session fails).
    ``--foreground`` keeps pytest in nox's process group, so whatever stops CI stops it too."""
    session.run(
        "timeout",
        "--foreground",
        "--kill-after=30s",
        SESSION_LIMIT,
        "python",
        "-m",
        "pytest",
        *args,
        *session.posargs,
        external=True,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict on src and tests."""
    # mypy reads the tests too, so it needs everything they import.
    session.install("-e", f".[{EXTRAS}]", *_groups("test", "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, with every extra and the real servers and agent."""
    session.install("-e", f".[{EXTRAS}]", *_groups("test"))
    _pytest(session)


@nox.session(python="3.11")
def core(session: nox.Session) -> None:
    """The core with no extra installed: the tests of _core, _settings and _instrument, and the
    import of every public module without its extra (none of these needs one)."""
    session.install("-e", ".", *_groups("test-core"))
    _pytest(session, *CORE_TESTS)


@nox.session(python="3.12")
def fast(session: nox.Session) -> None:
    """Every test that starts no subprocess, server or real agent: the loop while editing.

    Not in CI's sessions (the tests-3.x sessions run these too). Python 3.12: the first with
    eager tasks, so the whole backend matrix runs.
    """
    session.install("-e", f".[{EXTRAS}]", *_groups("test"))
    _pytest(session, "-m", "not e2e")
