"""Test sessions: lint + types, the suite on Python 3.10 to 3.13, and the core without extras."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "core", "tests-3.10", "tests-3.11", "tests-3.13"]

EXTRAS = "pyroscope,trio,fastapi,django,flask,receiver"
TEST_DEPS = [
    "pytest>=8",
    "anyio>=4.4",
    "httpx>=0.27",
    "uvloop>=0.19; sys_platform != 'win32'",
    "uvicorn>=0.30",
    "hypercorn>=0.16",
    "gunicorn>=22",
    "daphne>=4",
    "pyroscope-otel>=1.0",
    "structlog>=24",
    "hypothesis>=6.100",
    # The receiver UI: exports validated against speedscope's schema; browser tests drive
    # Debian's chromium (scripts/install-browser.sh), never a downloaded browser.
    "jsonschema>=4",
    "playwright>=1.40",
]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict on src."""
    # Pinned: a new ruff or mypy release must not turn a green main red on its own.
    session.install("ruff==0.17.6", "mypy==2.4.1", "-e", f".[{EXTRAS}]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict")


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """The whole suite, with every extra and the real servers and agent."""
    session.install("-e", f".[{EXTRAS}]", *TEST_DEPS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def core(session: nox.Session) -> None:
    """The core with no extra installed: it imports, instruments and labels asyncio tasks."""
    session.install("-e", ".", "pytest>=8")
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:anyio",
        "tests/core/test_import_without_extras.py",
        "tests/core/test_settings.py",
        "tests/core/test_sinks.py",
        "tests/core/test_processor.py",
        *session.posargs,
    )
