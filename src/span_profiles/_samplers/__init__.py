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

from collections.abc import Callable

from span_profiles._samplers.base import (
    AGENT_MINIMUM,
    FREE_THREADED,
    PYROSCOPE_IO_PYTHONS,
    PYTHON,
    Check,
    Choice,
    Sampler,
    SamplerName,
    agent_missing,
    agent_usable,
    builtin_readable,
    builtin_usable,
    version_tuple,
)

__all__ = [
    "AGENT_MINIMUM",
    "FREE_THREADED",
    "PYROSCOPE_IO_PYTHONS",
    "PYTHON",
    "Check",
    "Choice",
    "Sampler",
    "SamplerName",
    "agent_missing",
    "agent_usable",
    "builtin_readable",
    "builtin_usable",
    "choose",
    "get",
    "version_tuple",
]


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


def get(name: SamplerName) -> Sampler:
    """The process's sampler object of that name (imported on first use)."""
    if name == "builtin":
        from span_profiles._samplers.builtin import sampler as builtin_sampler

        return builtin_sampler.SAMPLER
    from span_profiles._samplers import pyroscope

    return pyroscope.SAMPLER
