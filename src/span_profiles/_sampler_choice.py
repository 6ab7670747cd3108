"""Which sampler can take profiles in this interpreter, or why none can.

The one place that decides it: :func:`_profiler.start_profiler` starts what :func:`choose` names
(and, when nothing can run here, logs the reason once, without a traceback), ``span-profiles
doctor`` prints the same reason with what to do, and the test suite skips the tests that need
the real agent with it.

Today the only sampler is pyroscope-io. Its 1.4 release has wheels for CPython 3.10-3.14 and no
free-threaded (``3.14t``) build; on 3.15 the ``pyroscope`` extra installs nothing (an environment
marker in ``pyproject.toml``), because pip would otherwise compile its Rust sdist or fall back to
1.1.0, which span-profiles rejects. So on 3.15 span labels, the middleware, the hooks and the
receiver work, and no profiles are taken until span-profiles' built-in sampler (for 3.14+)
is added as a second choice here.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from dataclasses import dataclass

__all__ = ["PYROSCOPE_IO_PYTHONS", "SamplerChoice", "choose", "pyroscope_io_missing"]

PYROSCOPE_IO_PYTHONS = ((3, 10), (3, 14))
"""The oldest and newest CPython ``(major, minor)`` pyroscope-io 1.4 publishes wheels for."""

PYTHON: tuple[int, int] = sys.version_info[:2]
"""The running Python's ``(major, minor)`` (a module attribute, so tests can stand in another)."""

FREE_THREADED: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
"""Whether this is a free-threaded build (``python3.14t``), whatever the GIL's state at run time."""


def _version(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def pyroscope_io_missing() -> tuple[str, bool] | None:
    """Why pyroscope-io cannot run here, and whether it has no build for this Python at all
    (``False``: it only is not installed); ``None`` when it imports."""
    try:
        importlib.import_module("pyroscope")
    except ImportError:
        pass
    else:
        return None
    python, newest = PYTHON, PYROSCOPE_IO_PYTHONS[1]
    if FREE_THREADED:
        return (
            f"pyroscope-io has no build for free-threaded Python {_version(python)}t "
            "(its build refuses free-threaded interpreters)",
            True,
        )
    if python > newest:
        return (
            f"pyroscope-io has no build for Python {_version(python)} (its newest wheels are for "
            f"{_version(newest)})",
            True,
        )
    return "pyroscope-io is not installed", False


@dataclass(frozen=True)
class SamplerChoice:
    """The sampler :func:`choose` found for this interpreter."""

    name: str | None
    """``"pyroscope-io"``, or ``None`` when none can run here."""
    reason: str = ""
    """Why none can run ("" when one can)."""
    no_build: bool = False
    """No sampler exists for this Python at all (rather than one that is not installed)."""

    @property
    def fix(self) -> str:
        """What a user can do about it ("" when a sampler runs)."""
        if self.name is not None:
            return ""
        if self.no_build:
            low, high = PYROSCOPE_IO_PYTHONS
            return (
                f"run on CPython {_version(low)}-{_version(high)} (not free-threaded) to take "
                "profiles; span labels, the middleware and the receiver work here; "
                "SPAN_PROFILES_PROFILER=off silences this"
            )
        return "pip install 'span-profiles[pyroscope]'"


def choose() -> SamplerChoice:
    """The sampler that can run in this interpreter, or why none can."""
    missing = pyroscope_io_missing()
    if missing is None:
        return SamplerChoice("pyroscope-io")
    reason, no_build = missing
    if no_build:
        reason += ", and span-profiles has no sampler of its own yet: no profiles are taken"
    return SamplerChoice(None, reason, no_build)
