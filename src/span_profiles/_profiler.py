"""Start and stop the pyroscope-io agent; keep it fork-safe; pin it next to the event loop.

Starting
    :func:`start_profiler` resolves :class:`~span_profiles.Settings` (explicit arguments >
    ``settings=`` > ``PYROSCOPE_*``/``SPAN_PROFILES_*`` environment > defaults) and calls
    ``pyroscope.configure()`` once per process. ``application_name`` defaults to the tracer
    provider's ``service.name``: Grafana links a span to its profile only when the two are equal.
    An ``atexit`` hook calls ``pyroscope.shutdown()``, which uploads the partial last window.

Fork safety
    The agent's native threads do not survive ``fork()``, and a thread holding one of its locks at
    the moment of the fork would leave that lock held forever in the child. So the agent must start
    *after* the last fork: under gunicorn, start it in ``post_fork`` (:mod:`span_profiles.gunicorn`),
    never at import time with ``preload_app``. A process cannot know whether it will fork later,
    so :func:`start_profiler` does not refuse; instead an ``os.register_at_fork`` hook marks the
    agent as not running in the child (a later :func:`start_profiler` there starts the child's own
    agent, which pyroscope-io supports), undoes our CPU pinning in the child, and logs a warning
    once when a process forks while its agent runs.

CPU pinning (Linux)
    py-spy reads a thread's stack first and its labels ~15-250 µs later. When the sampler runs on
    another CPU while the event loop keeps running, a label switched at a task step lands on
    samples of the next step: measured 93-94 % exact attribution at 2 ms steps and ~10 % at
    100 µs steps. With the agent's threads and the event-loop thread on one CPU the loop cannot
    run while the sampler reads it: 99.9-100 % exact. The agent's threads are the threads that
    appear during ``configure()``; the loop thread is the thread that calls :func:`start_profiler`
    from inside a running event loop, or that calls :func:`pin_current_thread` (the ASGI
    middleware does so at lifespan startup). All of them go to one CPU of the process's affinity
    mask, chosen by the gunicorn worker number or the pid, so workers spread over the CPUs.

    ``pin_cpu="auto"`` (default) pins only when a loop thread is known and the process may use
    more than one CPU; ``"on"`` also pins the thread calling :func:`start_profiler` when no loop
    runs yet (``start_profiler(); asyncio.run(main())``); ``"off"`` never pins. Threads inherit
    their creator's affinity, so worker threads started by a pinned loop thread share its CPU;
    for pure-Python work the GIL serialises them anyway.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from span_profiles._settings import Settings, Toggle

__all__ = [
    "pin_current_thread",
    "profiler_running",
    "start_profiler",
    "stop_profiler",
]

logger = logging.getLogger("span_profiles")

PinMode = Toggle

_TASKS = "/proc/self/task"


@dataclass
class _Agent:
    """The agent started in this process, and what we pinned for it."""

    pid: int
    settings: Settings
    application_name: str
    pin: PinMode
    agent_tids: frozenset[int]
    cpu_index: int | None = None
    """Index into the allowed CPUs (gunicorn worker number); default: the pid."""
    cpu: int | None = None
    """The CPU everything is pinned to, once pinning happened."""
    pinned: dict[int, set[int]] = field(default_factory=dict)
    """Native id of each thread we pinned (besides the agent's) -> its affinity before."""


_lock = threading.RLock()
_agent: _Agent | None = None
_pending_loop_threads: dict[int, None] = {}
"""Threads that called :func:`pin_current_thread` before the agent started (native ids)."""
_logged: set[str] = set()
_hooks_registered = False
_forking_thread_mask: set[int] | None = None
"""Set in the parent just before a fork: the forking thread's mask before we pinned it."""


def _log_once(key: str, level: int, message: str, *args: object) -> None:
    # One message per cause and process: a misconfiguration must not flood the application's log.
    if key in _logged:
        return
    _logged.add(key)
    logger.log(level, message, *args)


# -- settings -----------------------------------------------------------------------------------


def _resolve(settings: Settings | None, explicit: Mapping[str, Any]) -> Settings:
    if settings is None:
        return Settings.resolve(explicit)
    # The settings object is already resolved (environment included): only the overrides apply.
    return settings.with_overrides(**explicit)


def _provider(tracer_provider: Any | None) -> Any:
    if tracer_provider is not None:
        return tracer_provider
    from span_profiles import _instrument

    installation = _instrument._current
    if installation is not None:
        return installation.provider
    from opentelemetry import trace

    return trace.get_tracer_provider()


def _provider_service_name(provider: Any) -> str | None:
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

    Logs a warning (once) when an explicit name differs from the provider's ``service.name``,
    because Grafana then cannot link the provider's spans to these profiles.
    """
    env = os.environ if environ is None else environ
    service_name = _provider_service_name(provider)
    if settings.application_name is not None:
        # The agent accepts "name{k=v}": compare the name part only.
        base = settings.application_name.partition("{")[0]
        if service_name is not None and base != service_name:
            _log_once(
                "application_name",
                logging.WARNING,
                "span-profiles: application_name %r differs from the tracer provider's "
                "service.name %r; Grafana links spans to profiles only when they are equal",
                settings.application_name,
                service_name,
            )
        return settings.application_name
    if service_name is not None:
        return service_name
    return env.get("OTEL_SERVICE_NAME", "").strip() or "unknown_service:python"


# -- pinning ------------------------------------------------------------------------------------


def _pinning_supported() -> bool:
    return hasattr(os, "sched_setaffinity") and os.path.isdir(_TASKS)


def _process_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def choose_cpu(cpus: list[int], index: int | None = None) -> int:
    """The CPU for this process: ``cpus[index % n]``, with the pid as the default index.

    Several workers of one server get different CPUs when their indexes (gunicorn worker
    numbers, or consecutive pids) differ.
    """
    if not cpus:
        raise ValueError("no CPU to choose from")
    return cpus[(os.getpid() if index is None else index) % len(cpus)]


def _task_ids() -> set[int]:
    try:
        return {int(name) for name in os.listdir(_TASKS)}
    except OSError:
        return set()


def _python_thread_ids() -> set[int]:
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def _set_affinity(tid: int, cpus: set[int]) -> bool:
    try:
        os.sched_setaffinity(tid, cpus)
    except (ProcessLookupError, PermissionError, OSError):
        # The thread exited, or a cgroup forbids the CPU: pinning is an optimisation only.
        return False
    return True


def _pin_now(agent: _Agent, loop_tids: list[int]) -> bool:
    """Pin ``loop_tids`` to the agent's CPU; return whether any of them is pinned now."""
    if agent.cpu is None:
        return False
    pinned_any = False
    for tid in loop_tids:
        if tid in agent.pinned:
            pinned_any = True
            continue
        try:
            before = os.sched_getaffinity(tid)
        except OSError:
            continue
        if _set_affinity(tid, {agent.cpu}):
            agent.pinned[tid] = before
            pinned_any = True
    if pinned_any:
        logger.debug(
            "span-profiles: thread(s) %s pinned to CPU %d with the profiler's threads",
            sorted(agent.pinned),
            agent.cpu,
        )
    return pinned_any


def _agent_cpu(pin: PinMode, cpu_index: int | None) -> int | None:
    """The CPU for the agent's threads, or ``None`` when they stay unpinned."""
    if pin == "off":
        return None
    if not _pinning_supported():
        if pin == "on":
            _log_once(
                "pin-unsupported",
                logging.WARNING,
                "span-profiles: pin_cpu='on' needs Linux (os.sched_setaffinity); not pinned",
            )
        return None
    cpus = _process_cpus()
    if len(cpus) < 2:
        return None  # one CPU: everything shares it already
    return choose_cpu(cpus, cpu_index)


def in_event_loop() -> bool:
    """Whether the calling thread runs an asyncio loop or a trio run right now."""
    import asyncio

    if asyncio._get_running_loop() is not None:
        return True
    trio = sys.modules.get("trio")
    in_trio_run = getattr(getattr(trio, "lowlevel", None), "in_trio_run", None)
    return bool(in_trio_run()) if callable(in_trio_run) else False


def pin_current_thread() -> bool:
    """Declare the calling thread an event-loop thread: pin it next to the profiler's threads.

    Call it on the thread that runs the event loop, once the loop runs (an ASGI lifespan startup
    handler, the first line of ``main()``). With ``pin_cpu`` ``"auto"`` or ``"on"`` on Linux, the
    thread and the agent's sampler threads then share one CPU, which keeps per-task-step labels
    exact (see the module docs). Before :func:`start_profiler` the request is remembered and
    applied at start. Returns whether the thread is pinned now; never raises.
    """
    try:
        tid = threading.get_native_id()
        with _lock:
            agent = _agent
            if agent is None or agent.pid != os.getpid():
                _pending_loop_threads[tid] = None
                return False
            if agent.pin == "off" or not _pinning_supported():
                return False
            return _pin_now(agent, [tid])
    except Exception as exc:
        _log_once("pin", logging.WARNING, "span-profiles: CPU pinning failed: %r", exc)
        return False


def _unpin(agent: _Agent) -> None:
    for tid, before in agent.pinned.items():
        _set_affinity(tid, before)
    agent.pinned.clear()


# -- fork and exit ------------------------------------------------------------------------------


def _before_fork() -> None:
    global _forking_thread_mask
    agent = _agent
    _forking_thread_mask = None
    if agent is None or agent.pid != os.getpid():
        return
    _forking_thread_mask = agent.pinned.get(threading.get_native_id())
    _log_once(
        "fork",
        logging.WARNING,
        "span-profiles: the process forked while its profiler runs; the child has no profiler "
        "until it calls start_profiler() (gunicorn: use span_profiles.gunicorn.post_fork and no "
        "start at import time with preload_app)",
    )


def _after_fork_in_child() -> None:
    global _agent, _forking_thread_mask, _lock
    # Another thread of the parent may have held the lock at the fork: it would stay held.
    _lock = threading.RLock()
    _agent = None
    _pending_loop_threads.clear()
    mask, _forking_thread_mask = _forking_thread_mask, None
    if mask is not None:
        # The only thread of the child inherited our pin; a new process chooses its own CPU.
        _set_affinity(0, mask)


def _after_fork_in_parent() -> None:
    global _forking_thread_mask
    _forking_thread_mask = None


def _at_exit() -> None:
    agent = _agent
    if agent is not None and agent.pid == os.getpid():
        stop_profiler()


def _register_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork,
            after_in_child=_after_fork_in_child,
            after_in_parent=_after_fork_in_parent,
        )


# -- start / stop -------------------------------------------------------------------------------


def _wanted(settings: Settings) -> bool:
    # "auto" follows the master switch; "on" profiles even with labelling switched off.
    return settings.profiler == "on" or (settings.profiler == "auto" and settings.enabled)


def _import_agent(settings: Settings) -> Any | None:
    try:
        import pyroscope
    except ImportError:
        if settings.profiler == "on":
            _log_once(
                "import",
                logging.ERROR,
                "span-profiles: profiler='on' but pyroscope-io is not installed; no profiles. "
                "Install it with: pip install 'span-profiles[pyroscope]'",
            )
        return None
    return pyroscope


def start_profiler(
    *,
    settings: Settings | None = None,
    tracer_provider: Any | None = None,
    cpu_index: int | None = None,
    **explicit: Any,
) -> bool:
    """Start the pyroscope-io agent in this process; return whether it runs.

    Keyword arguments are :class:`~span_profiles.Settings` fields (``application_name``,
    ``server_address``, ``sample_rate``, ``tags``, ``upload_interval``, ``profiler``,
    ``pin_cpu`` ...); they win over ``settings``, which wins over the environment
    (``PYROSCOPE_<NAME>``, ``SPAN_PROFILES_PROFILER``, ``SPAN_PROFILES_PIN_CPU``).
    ``application_name`` defaults to ``service.name`` of ``tracer_provider`` (default: the
    provider :func:`~span_profiles.instrument` used, else the global one), then
    ``OTEL_SERVICE_NAME``. ``cpu_index`` picks the CPU for pinning among the allowed ones
    (default: the pid; gunicorn's helper passes the worker number).

    Idempotent: once the agent runs in this process, further calls change nothing and return
    ``True``. ``profiler="off"`` (or ``"auto"`` without pyroscope-io, or ``enabled=False``)
    returns ``False``. Start the agent after the last fork (see :mod:`span_profiles.gunicorn`).
    Invalid settings raise :class:`~span_profiles.SettingsError`; any failure of the agent
    itself is logged once and gives ``False``: the application keeps running unprofiled.
    """
    global _agent
    resolved = _resolve(settings, explicit)
    with _lock:
        if _agent is not None and _agent.pid == os.getpid():
            return True
        if not _wanted(resolved):
            return False
        agent_module = _import_agent(resolved)
        if agent_module is None:
            return False
        try:
            name = application_name_for(resolved, _provider(tracer_provider))
            in_loop = in_event_loop()
            cpu = _agent_cpu(resolved.pin_cpu, cpu_index)
            ok, agent_tids, caller_mask = _configure(agent_module, resolved, name, cpu)
        except Exception as exc:
            _log_once(
                "configure",
                logging.ERROR,
                "span-profiles: starting the pyroscope-io agent failed (%r); no profiles",
                exc,
            )
            return False
        if not ok:
            _log_once(
                "configure",
                logging.ERROR,
                "span-profiles: pyroscope.configure() refused to start the agent; no profiles",
            )
            return False
        _register_hooks()
        agent = _Agent(
            pid=os.getpid(),
            settings=resolved,
            application_name=name,
            pin=resolved.pin_cpu,
            agent_tids=agent_tids,
            cpu_index=cpu_index,
            cpu=cpu,
        )
        _agent = agent
        try:
            _pin_at_start(agent, in_loop, caller_mask)
        except Exception as exc:
            _log_once("pin", logging.WARNING, "span-profiles: CPU pinning failed: %r", exc)
        logger.debug(
            "span-profiles: profiler started as %r, pushing to %s every %d s",
            name,
            resolved.server_address,
            resolved.upload_interval,
        )
        return True


def _configure(
    agent_module: Any, settings: Settings, name: str, cpu: int | None
) -> tuple[bool, frozenset[int], set[int] | None]:
    """Call ``configure()``; with ``cpu``, the agent's threads are born pinned to it.

    Linux threads inherit their creator's CPU affinity, and the agent creates threads during
    ``configure()`` and afterwards from those threads (the sampler may appear a moment after
    ``configure()`` returns). So the calling thread is pinned around the call, which pins every
    agent thread, present and future, without having to find them. Returns ``configure()``'s
    result, the native threads that appeared meanwhile, and the caller's previous mask when the
    caller is still pinned.
    """
    before = _task_ids()
    caller_mask: set[int] | None = None
    if cpu is not None:
        caller_mask = os.sched_getaffinity(0)
        if not _set_affinity(0, {cpu}):
            caller_mask = None
    try:
        ok = bool(
            agent_module.configure(
                application_name=name,
                server_address=settings.server_address,
                sample_rate=settings.sample_rate,
                tags=dict(settings.tags),
                basic_auth_username=settings.basic_auth_username,
                basic_auth_password=settings.basic_auth_password,
                tenant_id=settings.tenant_id,
                http_headers=dict(settings.http_headers),
                upload_interval=settings.upload_interval,
                enable_logging=settings.enable_logging,
            )
        )
    except BaseException:
        if caller_mask is not None:
            _set_affinity(0, caller_mask)
        raise
    # Native threads that appeared during configure() and are not Python threads.
    agent_tids = frozenset(_task_ids() - before - _python_thread_ids())
    if not ok and caller_mask is not None:
        _set_affinity(0, caller_mask)
        caller_mask = None
    return ok, agent_tids, caller_mask


def _pin_at_start(agent: _Agent, in_loop: bool, caller_mask: set[int] | None) -> None:
    pending = list(_pending_loop_threads)
    _pending_loop_threads.clear()
    if caller_mask is not None:
        if in_loop or agent.pin == "on":
            # The caller is (or will be, with "on") the event-loop thread: it stays pinned.
            agent.pinned[threading.get_native_id()] = caller_mask
        else:
            _set_affinity(0, caller_mask)
    alive = _task_ids()
    _pin_now(agent, [tid for tid in pending if tid in alive])


def stop_profiler() -> bool:
    """Stop the agent, uploading the samples of the current window; return whether it ran.

    Threads we pinned get their former CPU affinity back. A later :func:`start_profiler` starts
    a new agent. Runs automatically at interpreter exit; never raises.
    """
    global _agent
    with _lock:
        agent = _agent
        if agent is None or agent.pid != os.getpid():
            return False
        _agent = None
        try:
            _unpin(agent)
        except Exception as exc:
            _log_once("unpin", logging.WARNING, "span-profiles: CPU unpinning failed: %r", exc)
        try:
            import pyroscope

            pyroscope.shutdown()
        except Exception as exc:
            _log_once(
                "shutdown", logging.ERROR, "span-profiles: stopping the agent failed: %r", exc
            )
        return True


def profiler_running() -> bool:
    """Whether this process's agent was started by :func:`start_profiler` and runs."""
    agent = _agent
    return agent is not None and agent.pid == os.getpid()


def pinned_cpu() -> int | None:
    """The CPU the agent and the loop thread are pinned to, or ``None`` when not pinned."""
    agent = _agent
    if agent is None or agent.pid != os.getpid() or not agent.pinned:
        return None
    return agent.cpu


def agent_thread_ids() -> frozenset[int]:
    """Native ids of the agent's threads (found at start), empty when not running."""
    agent = _agent
    if agent is None or agent.pid != os.getpid():
        return frozenset()
    return agent.agent_tids
