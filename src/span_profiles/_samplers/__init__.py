"""Samplers behind one contract: pyroscope-io's agent, or the built-in sampler (CPython 3.14+).

A sampler takes CPU samples of this process, labels them with the span each one belongs to and
pushes pprof profiles to ``server_address``. :class:`Sampler` is what every sampler provides;
:mod:`span_profiles._profiler` (the public ``start_profiler``/``stop_profiler``) and
``instrument()`` use nothing else:

* ``start``/``stop``: start after the last fork (once per process), stop with an exit flush
  bounded by ``shutdown_timeout``;
* ``step_hooks``: whether labels must be re-applied on every task step (the agent reads a
  thread's labels after its stack, so labels must always be current on the thread; the built-in
  sampler reads the running task with the stack and needs task creations only);
* ``places_threads``/``gates_worker_threads``: CPU pinning and the worker-thread wait, which
  exist only to shrink the agent's stack-to-label gap;
* ``make_sink``: the label sink it reads;
* ``doctor_checks``: what ``span-profiles doctor`` checks for it.

:func:`choose` is the one place that decides which sampler a process gets.

This module imports nothing heavy: the built-in sampler's process imports this package.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from span_profiles._core.sinks import Sink
    from span_profiles._settings import Settings

__all__ = [
    "AGENT_MINIMUM",
    "Choice",
    "Sampler",
    "SamplerName",
    "agent_usable",
    "builtin_readable",
    "builtin_usable",
    "choose",
    "get",
]

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

    def doctor_checks(self, settings: Settings) -> list[Any]:
        """``span-profiles doctor`` checks (``_doctor.Check``) for this sampler."""
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


def agent_usable() -> tuple[bool, str]:
    """Whether pyroscope-io (a supported version) is installed, without importing it."""
    from importlib import metadata

    if sys.modules.get("pyroscope") is None:
        try:
            if importlib.util.find_spec("pyroscope") is None:
                return (
                    False,
                    "pyroscope-io is not installed (pip install 'span-profiles[pyroscope]')",
                )
        except (ImportError, ValueError):
            return False, "pyroscope-io is not importable"
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
    if sys.implementation.name != "cpython" or sys.version_info < (3, 14):
        return False, "the built-in sampler needs CPython 3.14 or newer"
    if not sys.platform.startswith("linux"):
        return False, "the built-in sampler needs Linux"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
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


def choose(
    setting: str,
    *,
    agent: Callable[[], tuple[bool, str]] | None = None,
    builtin: Callable[[], tuple[bool, str]] | None = None,
    reads: Callable[[], tuple[bool, str]] | None = None,
) -> Choice:
    """The sampler for ``setting`` (``auto``, ``pyroscope`` or ``builtin``) on this Python.

    ``auto`` takes the built-in sampler where pyroscope-io cannot run (CPython 3.15+, or the
    agent not installed, on CPython 3.14+) and pyroscope-io where the built-in one cannot
    (CPython 3.10-3.13); where both can (3.14 with the agent), the built-in one, unless what
    this process can see of its setup says a sampler process could not read it
    (:func:`builtin_readable`). An explicit choice is kept even when it cannot run: starting it
    then fails with its reason.
    """
    if setting == "pyroscope":
        return Choice("pyroscope", "sampler='pyroscope'")
    builtin_ok, builtin_why = (builtin or builtin_usable)()
    if setting == "builtin":
        return Choice("builtin" if builtin_ok else None, f"sampler='builtin': {builtin_why}")
    agent_ok, agent_why = (agent or agent_usable)()
    if not agent_ok:
        if builtin_ok:
            return Choice("builtin", f"sampler='auto': {agent_why}; {builtin_why}")
        return Choice(None, f"no sampler available for this Python: {agent_why}; {builtin_why}")
    if builtin_ok:
        # Both can run (CPython 3.14 with pyroscope-io): the built-in sampler was exact in every
        # measured case, loaded or not, with no pinning and less app CPU (benchmarks/README.md,
        # "The built-in sampler"); it needs to be allowed to read the app, pyroscope-io does not.
        readable, why = (reads or builtin_readable)()
        if readable:
            return Choice("builtin", f"sampler='auto': {builtin_why}; {why}")
        return Choice("pyroscope", f"sampler='auto': {agent_why}; not the built-in one: {why}")
    return Choice("pyroscope", f"sampler='auto': {agent_why}")
    return Choice(None, f"no sampler available for this Python: {agent_why}; {builtin_why}")


def get(name: SamplerName) -> Sampler:
    """The process's sampler object of that name (imported on first use)."""
    if name == "builtin":
        from span_profiles._samplers.builtin import sampler as builtin_sampler

        return builtin_sampler.SAMPLER
    from span_profiles._samplers import pyroscope

    return pyroscope.SAMPLER
