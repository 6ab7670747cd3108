"""Start and stop the pyroscope-io agent; keep it fork-safe; bound the exit flush.

Starting
    :func:`start_profiler` resolves :class:`~span_profiles.Settings` (explicit arguments >
    ``settings=`` > ``PYROSCOPE_*``/``SPAN_PROFILES_*`` environment > defaults) and calls
    ``pyroscope.configure()`` once per process, with every agent option the settings declare
    (``gil_only``, ``oncpu``, ``report_*``, ``line_no`` included). ``application_name`` defaults to
    the tracer provider's ``service.name``: Grafana links a span to its profile only when the two
    are equal. Where the agent's threads and the event-loop thread run is
    :mod:`span_profiles._placement`'s job.

Stopping
    An ``atexit`` hook calls :func:`stop_profiler`, which runs ``pyroscope.shutdown()`` (upload of
    the partial last window and of every window still queued, serially, 10 s timeout each) on a
    daemon thread and waits at most ``shutdown_timeout`` seconds for it. What is still queued then
    is dropped and said so in one warning: an app exit, a SIGTERM'd gunicorn/uvicorn worker
    included, never hangs on a dead or slow receiver.

Fork safety
    The agent's native threads do not survive ``fork()``, and a thread holding one of its locks at
    the moment of the fork would leave that lock held forever in the child. So the agent must start
    *after* the last fork: under gunicorn, start it in ``post_fork`` (:mod:`span_profiles.gunicorn`),
    never at import time with ``preload_app``. A process cannot know whether it will fork later,
    so :func:`start_profiler` does not refuse; a child simply has no live agent (the agent record
    carries the pid it was started in), a later :func:`start_profiler` there starts the child's own
    agent, which pyroscope-io supports, and a warning is logged once when a process forks while its
    agent runs.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from span_profiles import _placement, _sampler_choice
from span_profiles._core import guard, sampler_gate
from span_profiles._placement import in_event_loop as in_event_loop
from span_profiles._placement import pin_current_thread as pin_current_thread
from span_profiles._settings import Settings

__all__ = [
    "pin_current_thread",
    "profiler_running",
    "start_profiler",
    "stop_profiler",
]

logger = logging.getLogger("span_profiles")


class _Flusher:
    """A daemon thread, started with the agent, that runs one call when asked and reports the end.

    Started at agent start, not at exit: from Python 3.12 no thread may start during interpreter
    shutdown ("can't create new thread at interpreter shutdown"), and the exit flush must run on
    a thread of its own so that the exit can stop waiting after ``shutdown_timeout``.
    """

    def __init__(self) -> None:
        self._go = threading.Event()
        self._done = threading.Event()
        self._call: Callable[[], Any] = lambda: None
        threading.Thread(target=self._run, name="span-profiles-flush", daemon=True).start()

    def _run(self) -> None:
        self._go.wait()
        try:
            self._call()
        finally:
            self._done.set()

    def run(self, call: Callable[[], Any], timeout: float) -> bool:
        """Run ``call`` on the thread; whether it finished within ``timeout`` seconds."""
        self._call = call
        self._go.set()
        return self._done.wait(timeout)


@dataclass(frozen=True)
class _Agent:
    """The agent started in this process."""

    pid: int
    settings: Settings
    application_name: str
    agent_tids: frozenset[int]
    started: float
    """``time.monotonic()`` at start: bounds what an exit flush can drop."""
    flusher: _Flusher
    """Runs the exit flush (``pyroscope.shutdown()``) with a bound."""


_lock = threading.RLock()
_agent: _Agent | None = None
_hooks_registered = False
_fork_warned = False
_name_warned = False
_no_sampler_warned = False


def _live_agent() -> _Agent | None:
    """The agent started in *this* process; ``None`` before a start and in a forked child."""
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


def _no_sampler(settings: Settings, choice: _sampler_choice.SamplerChoice) -> None:
    """Say why no profiles are taken: once when no sampler exists for this Python (a warning,
    no traceback); once as an error when ``profiler='on'`` asked for one that is not installed."""
    global _no_sampler_warned
    if choice.no_build:
        if not _no_sampler_warned:
            _no_sampler_warned = True
            logger.warning(
                "span-profiles: no sampler is available for this Python: %s. Fix: %s",
                choice.reason,
                choice.fix,
            )
    elif settings.profiler == "on":
        guard.fail(
            "the profiler (profiler='on' but pyroscope-io is not installed; "
            "pip install 'span-profiles[pyroscope]')",
            ImportError(choice.reason),
        )


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
    ``pin_cpu``, ``gil_only`` ...); they win over ``settings``, which wins over the environment
    (``PYROSCOPE_<NAME>``, ``SPAN_PROFILES_<NAME>``). ``application_name`` defaults to
    ``service.name`` of ``tracer_provider`` (default: the provider :func:`~span_profiles.instrument`
    used, else the global one), then ``OTEL_SERVICE_NAME``. ``cpu_index`` is the gunicorn worker
    number, which spreads one server's workers over the CPUs (default: the CPU the loop runs on).

    Idempotent: once the agent runs in this process, further calls change nothing and return
    ``True``. ``profiler="off"`` (or ``"auto"`` without pyroscope-io, or ``enabled=False``)
    returns ``False``; so does a Python no sampler runs on (3.15, free-threaded builds: see
    :mod:`span_profiles._sampler_choice`), after one warning saying so. Start the agent after
    the last fork (see :mod:`span_profiles.gunicorn`). Invalid settings raise
    :class:`~span_profiles.SettingsError`; any failure of the agent itself is logged once and
    gives ``False``: the application keeps running unprofiled.
    """
    global _agent
    resolved = _resolve(settings, explicit)
    with _lock:
        if _live_agent() is not None:
            return True
        if not _wanted(resolved):
            return False
        choice = _sampler_choice.choose()
        if choice.name is None:
            _no_sampler(resolved, choice)
            return False
        import pyroscope as agent_module

        try:
            name = application_name_for(resolved, _provider(tracer_provider))
            in_loop = in_event_loop()
            cpu = _placement.agent_cpu(resolved.pin_cpu, cpu_index)
            # Pinned around configure(): the agent's threads are born on the chosen CPU.
            with _placement.born_on(cpu):
                before = _placement.native_threads()
                ok = bool(agent_module.configure(**_agent_options(agent_module, resolved, name)))
                if not ok:
                    raise RuntimeError("pyroscope.configure() refused to start the agent")
            # Native threads that appeared during configure() and are not Python threads.
            agent_tids = _placement.native_threads() - before
        except Exception as exc:
            guard.fail("starting the pyroscope-io agent (no profiles)", exc)
            return False
        _register_hooks()
        _agent = _Agent(
            pid=os.getpid(),
            settings=resolved,
            application_name=name,
            agent_tids=agent_tids,
            started=time.monotonic(),
            flusher=_Flusher(),
        )
        sampler_gate.watch(
            lambda: _placement.native_threads() - before,
            gate=resolved.wait_for_sampler,
            found=_placement.sampling_threads_found,
        )
        try:
            # The caller is (or, with "on", will be) the event-loop thread: it keeps the pin.
            _placement.activate(agent_tids, caller_is_loop=in_loop or resolved.pin_cpu == "on")
        except Exception as exc:
            guard.fail("CPU placement", exc, _placement.release)
        logger.debug(
            "span-profiles: profiler started as %r, pushing to %s every %d s",
            name,
            resolved.server_address,
            resolved.upload_interval,
        )
        return True


def _agent_options(agent_module: Any, settings: Settings, name: str) -> dict[str, Any]:
    """Every ``configure()`` keyword the settings declare."""
    line_no = getattr(agent_module, "LineNo", None)
    options: dict[str, Any] = {
        "application_name": name,
        "server_address": settings.server_address,
        "sample_rate": settings.sample_rate,
        "tags": dict(settings.tags),
        "basic_auth_username": settings.basic_auth_username,
        "basic_auth_password": settings.basic_auth_password,
        "tenant_id": settings.tenant_id,
        "http_headers": dict(settings.http_headers),
        "upload_interval": settings.upload_interval,
        "enable_logging": settings.enable_logging,
        "gil_only": settings.gil_only,
        "oncpu": settings.oncpu,
        "report_pid": settings.report_pid,
        "report_thread_id": settings.report_thread_id,
        "report_thread_name": settings.report_thread_name,
    }
    if line_no is not None:
        # The agent's enum: the line being run, or none (a function's lines merge into one frame).
        options["line_no"] = line_no.LastInstruction if settings.line_no else line_no.NoLine
    return options


def stop_profiler() -> bool:
    """Stop the agent, uploading what it holds for at most ``shutdown_timeout``; return whether it ran.

    Threads we pinned get their former CPU affinity back. A later :func:`start_profiler` starts
    a new agent. Runs automatically at interpreter exit; never raises.
    """
    global _agent
    with _lock:
        agent = _live_agent()
        if agent is None:
            return False
        _agent = None
        sampler_gate.unwatch()
        try:
            _placement.release()
        except Exception as exc:
            guard.fail("CPU placement", exc)
        try:
            import pyroscope

            _flush(pyroscope, agent)
        except Exception as exc:
            guard.fail("stopping the pyroscope-io agent", exc)
        return True


def _flush(agent_module: Any, agent: _Agent) -> None:
    timeout = agent.settings.shutdown_timeout
    # A daemon thread: the interpreter may exit while the agent still waits on the network.
    begun = time.monotonic()
    if agent.flusher.run(agent_module.shutdown, timeout):
        logger.debug("span-profiles: profiler stopped, flush took %.2f s", time.monotonic() - begun)
        return
    logger.warning(
        "span-profiles: the profiler's exit flush to %s did not finish within shutdown_timeout="
        "%g s; dropped what was not uploaded yet: the last partial window and any window queued "
        "after failed uploads (at most the %.0f s since the agent started)",
        agent.settings.server_address,
        timeout,
        time.monotonic() - agent.started,
    )


def profiler_running() -> bool:
    """Whether this process's agent was started by :func:`start_profiler` and runs."""
    return _live_agent() is not None


def pinned_cpu() -> int | None:
    """The CPU the agent and the loop thread are pinned to, or ``None`` when not pinned."""
    return _placement.current_placement().cpu if _live_agent() is not None else None


def agent_thread_ids() -> frozenset[int]:
    """Native ids of the agent's threads (found at start), empty when not running."""
    agent = _live_agent()
    return agent.agent_tids if agent is not None else frozenset()
