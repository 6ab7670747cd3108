"""The pyroscope-io agent as a sampler: start, placement next to the event loop, bounded flush.

``configure()`` runs once per process with every agent option the settings declare (``gil_only``,
``oncpu``, ``report_*``, ``line_no`` included). py-spy reads a thread's labels 10-250 µs after
its stack, so this sampler needs labels re-applied on every task step, the event-loop thread
pinned next to the agent's threads (:mod:`span_profiles._placement`) and worker-thread label
switches held while a sample is in flight (:mod:`span_profiles._core.sampler_gate`).

Stopping runs ``pyroscope.shutdown()`` (upload of the partial last window and of every window
still queued, serially, 10 s timeout each) on a daemon thread started with the agent, and waits
at most ``shutdown_timeout`` seconds for it: what is still queued then is dropped and said so in
one warning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from span_profiles import _placement
from span_profiles._core import guard, sampler_gate
from span_profiles._core.sinks import NullSink, PyroscopeSink, Sink
from span_profiles._placement import in_event_loop
from span_profiles._samplers import base
from span_profiles._samplers.base import (
    AGENT_MINIMUM,
    PYROSCOPE_IO_PYTHONS,
    Check,
    SamplerName,
    agent_missing,
    version_tuple,
)
from span_profiles._settings import Settings

__all__ = ["SAMPLER", "PyroscopeSampler", "why_missing"]

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
    agent_tids: frozenset[int]
    started: float
    """``time.monotonic()`` at start: bounds what an exit flush can drop."""
    flusher: _Flusher


def why_missing() -> str:
    """Why pyroscope-io does not import here, and the fix that works on this Python.

    Where it has no build (3.15, free-threaded builds) installing the extra installs nothing:
    the fix there is the built-in sampler, where it runs.
    """
    missing = agent_missing()
    if missing is None:
        return "pyroscope-io is installed but does not import"
    reason, no_build = missing
    if no_build and base.builtin_usable()[0]:
        reason += "; sampler='auto' (the default) or 'builtin' takes the built-in sampler here"
    return reason


def _import_agent(settings: Settings) -> Any | None:
    try:
        import pyroscope
    except ImportError as exc:
        if settings.profiler == "on" or settings.sampler == "pyroscope":
            guard.fail(f"the profiler ({why_missing()})", exc)
        return None
    return pyroscope


def agent_options(agent_module: Any, settings: Settings, name: str) -> dict[str, Any]:
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


class PyroscopeSampler:
    """pyroscope-io's py-spy sampler, with the placement and the gate it needs."""

    name: SamplerName = "pyroscope"
    step_hooks = True
    places_threads = True
    gates_worker_threads = True

    def __init__(self) -> None:
        self._agent: _Agent | None = None

    def make_sink(self) -> Sink:
        """:class:`PyroscopeSink` when pyroscope-io is installed, else a sink that drops labels."""
        try:
            return PyroscopeSink()
        except ImportError:
            logger.warning("span-profiles: labels go nowhere: %s", why_missing())
            return NullSink()

    def _live(self) -> _Agent | None:
        agent = self._agent
        return agent if agent is not None and agent.pid == os.getpid() else None

    def running(self) -> bool:
        """Whether the agent was started in this process (not in a parent before a fork)."""
        return self._live() is not None

    def agent_thread_ids(self) -> frozenset[int]:
        """Native ids of the agent's threads (found at start), empty when not running."""
        agent = self._live()
        return agent.agent_tids if agent is not None else frozenset()

    def start(self, settings: Settings, application_name: str, cpu_index: int | None) -> bool:
        """``pyroscope.configure()`` with the agent's threads born on the chosen CPU."""
        agent_module = _import_agent(settings)
        if agent_module is None:
            return False
        try:
            in_loop = in_event_loop()
            cpu = _placement.agent_cpu(settings.pin_cpu, cpu_index)
            # Pinned around configure(): the agent's threads are born on the chosen CPU.
            with _placement.born_on(cpu):
                before = _placement.native_threads()
                options = agent_options(agent_module, settings, application_name)
                ok = bool(agent_module.configure(**options))
                if not ok:
                    raise RuntimeError("pyroscope.configure() refused to start the agent")
            # Native threads that appeared during configure() and are not Python threads.
            agent_tids = _placement.native_threads() - before
        except Exception as exc:
            guard.fail("starting the pyroscope-io agent (no profiles)", exc)
            return False
        self._agent = _Agent(
            pid=os.getpid(),
            settings=settings,
            agent_tids=agent_tids,
            started=time.monotonic(),
            flusher=_Flusher(),
        )
        sampler_gate.watch(
            lambda: _placement.native_threads() - before,
            gate=settings.wait_for_sampler,
            found=_placement.sampling_threads_found,
        )
        try:
            # The caller is (or, with "on", will be) the event-loop thread: it keeps the pin.
            _placement.activate(agent_tids, caller_is_loop=in_loop or settings.pin_cpu == "on")
        except Exception as exc:
            guard.fail("CPU placement", exc, _placement.release)
        if settings.wall:
            # py-spy gives no waiting time: the wall profile is made in this process.
            from span_profiles._samplers.wall.inprocess import WALL

            try:
                WALL.start(settings, application_name)
            except Exception as exc:
                guard.fail("starting the wall-clock profile (CPU profiles go on)", exc)
        return True

    def stop(self, timeout: float) -> bool:
        """Unpin, then ``pyroscope.shutdown()`` for at most ``timeout`` seconds."""
        agent = self._live()
        if agent is None:
            return False
        self._agent = None
        sampler_gate.unwatch()
        try:
            _placement.release()
        except Exception as exc:
            guard.fail("CPU placement", exc)
        from span_profiles._samplers.wall.inprocess import WALL

        deadline = time.monotonic() + timeout
        wall = WALL.running()
        if wall:
            # Its upload thread flushes while the agent does: one shutdown_timeout for both.
            WALL.halt()
        try:
            import pyroscope

            self._flush(pyroscope, agent, timeout)
        except Exception as exc:
            guard.fail("stopping the pyroscope-io agent", exc)
        if wall:
            WALL.join(deadline)
        return True

    def _flush(self, agent_module: Any, agent: _Agent, timeout: float) -> None:
        begun = time.monotonic()
        # A daemon thread: the interpreter may exit while the agent still waits on the network.
        if agent.flusher.run(agent_module.shutdown, timeout):
            logger.debug(
                "span-profiles: profiler stopped, flush took %.2f s", time.monotonic() - begun
            )
            return
        logger.warning(
            "span-profiles: the profiler's exit flush to %s did not finish within "
            "shutdown_timeout=%g s; dropped what was not uploaded yet: the last partial window "
            "and any window queued after failed uploads (at most the %.0f s since the agent "
            "started)",
            agent.settings.server_address,
            timeout,
            time.monotonic() - agent.started,
        )

    def after_fork_in_child(self) -> None:
        """The agent's threads did not survive the fork."""
        sampler_gate.unwatch()

    def doctor_checks(self, settings: Settings) -> list[Check]:
        """The agent's own checks (version) and CPU pinning."""
        return [check_agent(), check_pinning(settings)]


# -- span-profiles doctor --------------------------------------------------------------------


def check_agent() -> Check:
    """pyroscope-io is installed, importable, and at least :data:`AGENT_MINIMUM`."""
    from importlib import metadata

    try:
        version = metadata.version("pyroscope-io")
    except metadata.PackageNotFoundError:
        # No build for this Python, or not installed: the reason the app logs too.
        missing = agent_missing()
        reason, no_build = missing or ("pyroscope-io is not installed", False)
        low, high = PYROSCOPE_IO_PYTHONS
        fix = (
            f"run on CPython {low[0]}.{low[1]}-{high[0]}.{high[1]} with the GIL, or CPython 3.14+ "
            "with the GIL for the built-in sampler"
            if no_build
            else "pip install 'span-profiles[pyroscope]'"
        )
        return Check("agent", "problem", f"no sampler: {reason}", fix)
    try:
        import pyroscope  # noqa: F401
    except Exception as exc:  # a broken wheel raises anything
        return Check(
            "agent",
            "problem",
            f"pyroscope-io {version} is installed but does not import: {exc!r}",
            "reinstall it for this platform: pip install --force-reinstall pyroscope-io",
        )
    if version_tuple(version) < AGENT_MINIMUM:
        minimum = ".".join(map(str, AGENT_MINIMUM))
        return Check(
            "agent",
            "problem",
            f"pyroscope-io {version} is older than the supported {minimum}",
            f"pip install 'pyroscope-io>={minimum}'",
        )
    return Check("agent", "ok", f"pyroscope-io {version}")


def check_pinning(settings: Settings) -> Check:
    """Whether the sampler and the event-loop thread will share a CPU, and why."""
    if settings.pin_cpu == "off":
        return Check(
            "pinning",
            "warning",
            "pin_cpu=off: per-task-step labels are ~94 % exact at 2 ms steps, ~10 % at 100 µs",
            "keep pin_cpu=auto unless you measured a cost",
        )
    if not _placement.supported():
        return Check("pinning", "ok", "not on Linux: nothing is pinned, labels are less exact")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Check(
            "pinning", "ok", "one allowed CPU: the sampler and the loop share it, nothing to pin"
        )
    when = "at start" if settings.pin_cpu == "on" else "when the profiler starts in an event loop"
    shared = (
        f"pin_cpu={settings.pin_cpu}: {when}, the sampler's threads and one event-loop thread "
        f"share one of CPUs {allowed}; every other thread keeps all of them"
    )
    priority = _placement.sampler_priority_allowed()
    if priority is None:
        return Check(
            "pinning",
            "warning",
            f"{shared}; the sampler's priority cannot be raised (no CAP_SYS_NICE): on a busy "
            "machine a thread waking on that CPU can interrupt a sample, and some samples then "
            "carry the next task step's labels (91-98 % exact measured beside busy neighbours)",
            "allow CAP_SYS_NICE (docker run --cap-add SYS_NICE; Kubernetes: "
            "securityContext.capabilities.add [SYS_NICE]), or on Python 3.14+ use sampler=builtin",
        )
    return Check("pinning", "ok", f"{shared}; the sampler's two threads run at {priority}")


SAMPLER = PyroscopeSampler()
"""The process's pyroscope-io sampler."""
