"""The adapters' lazy start-up: instrument and start the profiler once per process, on first use.

Adapters run it at ASGI lifespan startup and on every request. The first run in a (forked) worker
process calls :func:`span_profiles.instrument` if nothing else did, and starts the pyroscope-io
agent as ``settings.profiler`` says. Starting it here, lazily, is what keeps it fork-safe under
pre-forking servers: the agent never runs in a process that forks later (gunicorn's master with
``preload_app``, Django building its middleware chain before the fork).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from span_profiles import _instrument
from span_profiles._core import guard
from span_profiles._settings import Settings

__all__ = ["LazyStart"]


class LazyStart:
    """Call it before serving; the first call in each process starts everything, once.

    Concurrent first requests wait for that first call, so none of them runs unlabelled. Later
    calls cost one ``os.getpid()`` and a comparison.
    """

    __slots__ = (
        "_agent_started_in",
        "_locks",
        "_sink",
        "_started_in",
        "_tracer_provider",
        "settings",
    )

    def __init__(self, tracer_provider: Any | None, sink: Any | None, settings: Settings) -> None:
        self._tracer_provider = tracer_provider
        self._sink = sink
        self.settings = settings
        self._started_in: int | None = None
        self._agent_started_in: int | None = None
        # One lock per process: a lock held by another thread at fork time stays held in the child.
        self._locks: dict[int, threading.Lock] = {}

    def __call__(self, *, on_loop: bool = False) -> None:
        """Start, unless this process already did.

        Args:
            on_loop: the caller runs on the thread of a running event loop (ASGI adapters): that
                thread joins the profiler's CPU when the profiler starts now.
        """
        pid = os.getpid()
        if self._started_in == pid:
            return
        with self._locks.setdefault(pid, threading.Lock()):
            if self._started_in != pid:
                self._start(on_loop)
                self._started_in = pid

    def _start(self, on_loop: bool) -> None:
        settings = self.settings
        if not _instrument.is_instrumented():
            _instrument.instrument(
                tracer_provider=self._tracer_provider, sink=self._sink, settings=settings
            )
        if settings.profiler == "off":
            return
        from span_profiles import _profiler

        try:
            if _profiler.start_profiler(settings=settings, tracer_provider=self._tracer_provider):
                self._agent_started_in = os.getpid()
            if on_loop:
                # The agent may have started before the loop (gunicorn post_worker_init, app
                # import): this thread runs the loop, so it joins the agent's CPU.
                _profiler.pin_current_thread()
        except Exception as exc:
            guard.fail("starting the profiler", exc)

    def stop(self) -> None:
        """Stop the agent if this start-up started it in this process, flushing its last window.

        For servers that end the process by re-raising the signal they handled (uvicorn does, and
        so gunicorn's ``UvicornWorker``): ``atexit`` never runs there, so the ASGI lifespan's
        shutdown is the last moment to upload. Bounded by ``shutdown_timeout``.
        """
        if self._agent_started_in != os.getpid():
            return
        self._agent_started_in = None
        from span_profiles import _profiler

        _profiler.stop_profiler()
