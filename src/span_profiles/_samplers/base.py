"""The samplers' contract and what decides between them, at the bottom of the samplers layer.

What every sampler provides (:class:`Sampler`), what ``span-profiles doctor`` reports
(:class:`Check`), and whether each sampler can run in this interpreter. The concrete samplers
(:mod:`.pyroscope`, :mod:`.builtin`) import this module; :mod:`span_profiles._samplers` (the
package, above them) chooses one. Imports nothing heavy: the built-in sampler's process imports
this package.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from span_profiles._core.sinks import Sink
    from span_profiles._settings import Settings

__all__ = [
    "AGENT_MINIMUM",
    "FREE_THREADED",
    "PYROSCOPE_IO_PYTHONS",
    "PYTHON",
    "Check",
    "Choice",
    "Sampler",
    "SamplerName",
    "Status",
    "agent_missing",
    "agent_usable",
    "builtin_readable",
    "builtin_usable",
    "version_tuple",
]

Status = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Check:
    """One ``span-profiles doctor`` finding: what was checked, what was found, what to do."""

    name: str
    status: Status
    detail: str
    fix: str = ""


SamplerName = Literal["pyroscope", "builtin"]

AGENT_MINIMUM = (1, 4)
"""The oldest supported pyroscope-io."""


class Sampler(Protocol):
    """What a sampler provides (see the module docstring)."""

    name: SamplerName
    step_hooks: bool
    places_threads: bool
    gates_worker_threads: bool

    def make_sink(self) -> Sink:
        """The label sink this sampler reads (``instrument()`` installs it)."""
        ...

    def start(self, settings: Settings, application_name: str, cpu_index: int | None) -> bool:
        """Start sampling this process; ``False`` (logged once) when it cannot."""
        ...

    def stop(self, timeout: float) -> bool:
        """Stop, uploading what is held for at most ``timeout`` s; whether it was running."""
        ...

    def running(self) -> bool:
        """Whether it samples this process now."""
        ...

    def doctor_checks(self, settings: Settings) -> list[Check]:
        """``span-profiles doctor`` checks for this sampler."""
        ...


@dataclass(frozen=True)
class Choice:
    """Which sampler a process gets, and why (``name`` ``None``: none can run here)."""

    name: SamplerName | None
    reason: str


def version_tuple(text: str) -> tuple[int, ...]:
    """``"1.4.0rc1"`` -> ``(1, 4, 0)``."""
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


PYROSCOPE_IO_PYTHONS = ((3, 10), (3, 14))
"""The oldest and newest CPython ``(major, minor)`` pyroscope-io 1.4 publishes wheels for."""

PYTHON: tuple[int, int] = sys.version_info[:2]
"""The running Python's ``(major, minor)`` (a module attribute, so tests can stand in another)."""

FREE_THREADED: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
"""Whether this is a free-threaded build (``python3.14t``), whatever the GIL's state at run time."""


def _version(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def agent_missing() -> tuple[str, bool] | None:
    """Why pyroscope-io cannot run here, and whether it has no build for this Python at all
    (``False``: it only is not installed); ``None`` when it is importable."""
    if sys.modules.get("pyroscope") is not None:
        return None
    if "pyroscope" not in sys.modules:  # None in sys.modules: refused (tests stand in that)
        try:
            if importlib.util.find_spec("pyroscope") is not None:
                return None
        except (ImportError, ValueError):
            return "pyroscope-io is not importable", False
    newest = PYROSCOPE_IO_PYTHONS[1]
    if FREE_THREADED:
        return (
            f"pyroscope-io has no build for free-threaded Python {_version(PYTHON)}t "
            "(its build refuses free-threaded interpreters)",
            True,
        )
    if newest < PYTHON:
        return (
            f"pyroscope-io has no build for Python {_version(PYTHON)} (its newest wheels are "
            f"for {_version(newest)})",
            True,
        )
    return "pyroscope-io is not installed (pip install 'span-profiles[pyroscope]')", False


def agent_usable() -> tuple[bool, str]:
    """Whether pyroscope-io (a supported version) is installed, without importing it."""
    from importlib import metadata

    missing = agent_missing()
    if missing is not None:
        return False, missing[0]
    try:
        version = metadata.version("pyroscope-io")
    except metadata.PackageNotFoundError:
        return True, "pyroscope is importable"
    if version_tuple(version) < AGENT_MINIMUM:
        minimum = ".".join(map(str, AGENT_MINIMUM))
        return False, f"pyroscope-io {version} is older than the supported {minimum}"
    return True, f"pyroscope-io {version}"


def builtin_usable() -> tuple[bool, str]:
    """Whether the built-in sampler can run on this interpreter (not whether it may read)."""
    if sys.implementation.name != "cpython" or PYTHON < (3, 14):
        return False, "the built-in sampler needs CPython 3.14 or newer"
    if not sys.platform.startswith("linux"):
        return False, "the built-in sampler needs Linux"
    if FREE_THREADED:
        return False, "the built-in sampler does not support free-threaded builds (not measured)"
    if importlib.util.find_spec("_remote_debugging") is None:
        return False, "this CPython has no _remote_debugging module"
    return True, f"CPython {sys.version_info.major}.{sys.version_info.minor} on Linux"


_readable: dict[int, tuple[bool, str]] = {}


def builtin_readable() -> tuple[bool, str]:
    """Whether a sampler process could read this one (dumpable, Yama, seccomp), once per pid."""
    import os

    pid = os.getpid()
    if pid not in _readable:
        from span_profiles._samplers.builtin import preflight

        _readable[pid] = preflight.readable()
    return _readable[pid]
