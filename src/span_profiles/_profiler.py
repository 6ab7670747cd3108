"""Start and stop this process's sampler (pyroscope-io or the built-in one); fork and exit.

The public facade over :mod:`span_profiles._samplers` (one contract, two samplers).

Starting
    :func:`start_profiler` resolves :class:`~span_profiles.Settings` (explicit arguments >
    ``settings=`` > ``PYROSCOPE_*``/``SPAN_PROFILES_*`` environment > defaults), picks the sampler
    (``sampler`` = ``auto``/``pyroscope``/``builtin``; :func:`span_profiles._samplers.choose`;
    once ``instrument()`` ran, the sampler it chose its hooks for) and starts it once per
    process. ``application_name`` defaults to the tracer provider's ``service.name``: Grafana
    links a span to its profile only when the two are equal.

Stopping
    An ``atexit`` hook calls :func:`stop_profiler`, which stops the sampler with its exit flush
    bounded by ``shutdown_timeout``: an app exit, a SIGTERM'd gunicorn/uvicorn worker included,
    never hangs on a dead or slow receiver.

Fork safety
    A sampler must start *after* the last fork: the agent's native threads do not survive
    ``fork()`` (and a lock one of them held would stay held), and the built-in sampler reads the
    process that started it. Under gunicorn, start it in ``post_fork``
    (:mod:`span_profiles.gunicorn`), never at import time with ``preload_app``. A process cannot
    know whether it will fork later, so :func:`start_profiler` does not refuse; a child simply
    has no live sampler (the record carries the pid it was started in), a later
    :func:`start_profiler` there starts the child's own, and a warning is logged once when a
    process forks while its sampler runs.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from span_profiles import _placement, _samplers
from span_profiles._core import guard
from span_profiles._placement import in_event_loop as in_event_loop
from span_profiles._samplers import Sampler
from span_profiles._settings import Settings

__all__ = [
    "pin_current_thread",
    "profiler_running",
    "start_profiler",
    "stop_profiler",
]

logger = logging.getLogger("span_profiles")


@dataclass(frozen=True)
class _Running:
    """The sampler started in this process."""

    pid: int
    settings: Settings
    sampler: Sampler
    application_name: str
    started: float
    """``time.monotonic()`` at start."""


_lock = threading.RLock()
_agent: _Running | None = None
"""The sampler started here (the name predates the built-in sampler)."""
_hooks_registered = False
_fork_warned = False
_name_warned = False
_none_warned = False


def _live_agent() -> _Running | None:
    """The sampler started in *this* process; ``None`` before a start and in a forked child."""
    agent = _agent
    return agent if agent is not None and agent.pid == os.getpid() else None


# -- settings -----------------------------------------------------------------------------------


def _resolve(settings: Settings | None, explicit: Mapping[str, Any]) -> Settings:
    if settings is None:
        return Settings.resolve(explicit)
    # The settings object is already resolved (environment included): only the overrides apply.
    return settings.with_overrides(**explicit)


def _provider(tracer_provider: Any | None) -> Any:
    if tracer_provider is not None:
        return tracer_provider
    from span_profiles._instrument import installed_tracer_provider

    installed = installed_tracer_provider()
    if installed is not None:
        return installed
    from opentelemetry import trace

    return trace.get_tracer_provider()


def provider_service_name(provider: Any) -> str | None:
    """The provider resource's ``service.name``, or ``None`` when it has none."""
    resource = getattr(provider, "resource", None)
    attributes = getattr(resource, "attributes", None)
    if not isinstance(attributes, Mapping):
        return None
    name = attributes.get("service.name")
    return name if isinstance(name, str) and name else None


def application_name_for(
    settings: Settings, provider: Any, environ: Mapping[str, str] | None = None
) -> str:
    """The Pyroscope ``application_name`` to use: explicit, else ``service.name``, else the env.

    Logs a warning when an explicit name differs from the provider's ``service.name``, because
    Grafana then cannot link the provider's spans to these profiles.
    """
    global _name_warned
    env = os.environ if environ is None else environ
    service_name = provider_service_name(provider)
    if settings.application_name is not None:
        # The agent accepts "name{k=v}": compare the name part only.
        base = settings.application_name.partition("{")[0]
        if service_name is not None and base != service_name and not _name_warned:
            _name_warned = True
            logger.warning(
                "span-profiles: application_name %r differs from the tracer provider's "
                "service.name %r; Grafana links spans to profiles only when they are equal",
                settings.application_name,
                service_name,
            )
        return settings.application_name
    if service_name is not None:
        return service_name
    return env.get("OTEL_SERVICE_NAME", "").strip() or "unknown_service:python"


# -- fork and exit ------------------------------------------------------------------------------


def _before_fork() -> None:
    global _fork_warned
    if _live_agent() is None or _fork_warned:
        return
    _fork_warned = True
    logger.warning(
        "span-profiles: the process forked while its profiler runs; the child has no profiler "
        "until it calls start_profiler() (gunicorn: use span_profiles.gunicorn.post_fork and no "
        "start at import time with preload_app)"
    )


def _after_fork_in_child() -> None:
    global _lock
    # Another thread of the parent may have held the lock at the fork: it would stay held.
    _lock = threading.RLock()
    from span_profiles._core import sampler_gate

    sampler_gate.unwatch()  # the agent's threads did not survive the fork


def _at_exit() -> None:
    if _live_agent() is not None:
        stop_profiler()


def _register_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_at_exit)
    _placement.register_fork_hooks()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# -- start / stop -------------------------------------------------------------------------------


def _wanted(settings: Settings) -> bool:
    # "auto" follows the master switch; "on" profiles even with labelling switched off.
    return settings.profiler == "on" or (settings.profiler == "auto" and settings.enabled)


def choose_sampler(settings: Settings) -> _samplers.Choice:
    """The sampler this process gets: the one ``instrument()`` set its hooks up for, if it ran
    (its hooks and sink fit that sampler only), else the ``sampler`` setting's choice."""
    from span_profiles import _instrument

    installed = _instrument.installed_choice()
    wanted = _samplers.choose(settings.sampler)
    if installed is None:
        return wanted
    if installed.name != wanted.name and settings.sampler != "auto":
        logger.warning(
            "span-profiles: sampler=%r, but instrument() set labels up for the %s sampler; "
            "starting that one (pass the same sampler setting to both)",
            settings.sampler,
            installed.name,
        )
    return installed


def _nothing_runs_here() -> bool:
    """No sampler exists for this interpreter at all (not merely one left uninstalled)."""
    missing = _samplers.agent_missing()
    return missing is None or missing[1]


def start_profiler(
    *,
    settings: Settings | None = None,
    tracer_provider: Any | None = None,
    cpu_index: int | None = None,
    **explicit: Any,
) -> bool:
    """Start this process's sampler (pyroscope-io or the built-in one); return whether it runs.

    Keyword arguments are :class:`~span_profiles.Settings` fields (``application_name``,
    ``server_address``, ``sample_rate``, ``tags``, ``upload_interval``, ``profiler``,
    ``sampler``, ``pin_cpu``, ``gil_only`` ...); they win over ``settings``, which wins over the
    environment (``PYROSCOPE_<NAME>``, ``SPAN_PROFILES_<NAME>``). ``application_name`` defaults
    to ``service.name`` of ``tracer_provider`` (default: the provider
    :func:`~span_profiles.instrument` used, else the global one), then ``OTEL_SERVICE_NAME``.
    ``cpu_index`` is the gunicorn worker number, which spreads one server's workers over the
    CPUs (pyroscope-io's placement; default: the CPU the loop runs on).

    Idempotent: once a sampler runs in this process, further calls change nothing and return
    ``True``. ``profiler="off"`` (or ``enabled=False``, or no sampler for this Python) returns
    ``False``. Start it after the last fork (see :mod:`span_profiles.gunicorn`). Invalid
    settings raise :class:`~span_profiles.SettingsError`; any failure of the sampler itself is
    logged once and gives ``False``: the application keeps running unprofiled.
    """
    global _agent, _none_warned
    resolved = _resolve(settings, explicit)
    with _lock:
        if _live_agent() is not None:
            return True
        if not _wanted(resolved):
            return False
        choice = choose_sampler(resolved)
        if choice.name is None:
            nothing_here = _nothing_runs_here()
            if (resolved.profiler == "on" or resolved.sampler != "auto") and not nothing_here:
                guard.fail(f"the profiler ({choice.reason})", RuntimeError(choice.reason))
            elif not _none_warned and nothing_here:
                # Said once, without a traceback. An agent that is merely not installed where it
                # could run is the user's choice with profiler='auto' (its documented meaning).
                _none_warned = True
                logger.warning(
                    "span-profiles: %s; no profiles are taken (span labels, the middleware and "
                    "the receiver work here; SPAN_PROFILES_PROFILER=off silences this)",
                    choice.reason,
                )
            return False
        sampler = _samplers.get(choice.name)
        try:
            name = application_name_for(resolved, _provider(tracer_provider))
        except Exception as exc:
            guard.fail("starting the profiler", exc)
            return False
        if not sampler.start(resolved, name, cpu_index):
            return False
        _register_hooks()
        _agent = _Running(
            pid=os.getpid(),
            settings=resolved,
            sampler=sampler,
            application_name=name,
            started=time.monotonic(),
        )
        logger.debug(
            "span-profiles: %s sampler started as %r (%s), pushing to %s every %d s",
            sampler.name,
            name,
            choice.reason,
            resolved.server_address,
            resolved.upload_interval,
        )
        return True


def stop_profiler() -> bool:
    """Stop the sampler, uploading what it holds for at most ``shutdown_timeout``; return
    whether it ran.

    Threads pinned for pyroscope-io get their former CPU affinity back. A later
    :func:`start_profiler` starts a new sampler. Runs automatically at interpreter exit; never
    raises.
    """
    global _agent
    with _lock:
        agent = _live_agent()
        if agent is None:
            return False
        _agent = None
        try:
            agent.sampler.stop(agent.settings.shutdown_timeout)
        except Exception as exc:
            guard.fail(f"stopping the {agent.sampler.name} sampler", exc)
        return True


def profiler_running() -> bool:
    """Whether this process's sampler was started by :func:`start_profiler` and runs."""
    agent = _live_agent()
    return agent is not None and agent.sampler.running()


def running_sampler() -> Sampler | None:
    """The sampler started in this process, if any."""
    agent = _live_agent()
    return agent.sampler if agent is not None else None


def pin_current_thread() -> bool:
    """Declare the calling thread an event-loop thread: pin it next to the profiler's threads.

    Only the pyroscope-io sampler places threads (see
    :func:`span_profiles._placement.pin_current_thread`); with the built-in sampler nothing is
    pinned and this returns ``False``.
    """
    agent = _live_agent()
    if agent is not None and not agent.sampler.places_threads:
        return False
    return _placement.pin_current_thread()


def pinned_cpu() -> int | None:
    """The CPU the agent and the loop thread are pinned to, or ``None`` when not pinned."""
    agent = _live_agent()
    if agent is None or not agent.sampler.places_threads:
        return None
    return _placement.current_placement().cpu


def agent_thread_ids() -> frozenset[int]:
    """Native ids of the pyroscope-io agent's threads (found at start), empty otherwise."""
    agent = _live_agent()
    if agent is None or agent.sampler.name != "pyroscope":
        return frozenset()
    from span_profiles._samplers import pyroscope

    return pyroscope.SAMPLER.agent_thread_ids()
