"""gunicorn hooks: start the profiler in each worker, after the fork.

The pyroscope-io agent must start after the last ``fork()`` (its native threads do not survive
one). The span-profiles adapters already start it lazily, on a worker's first request; these hooks
start it as soon as the worker is ready instead. In ``gunicorn.conf.py``::

    from span_profiles.gunicorn import post_worker_init

or, with options (any :class:`~span_profiles.Settings` field)::

    from span_profiles.gunicorn import make_post_worker_init

    post_worker_init = make_post_worker_init(upload_interval=15, tags={"region": "eu"})

``post_worker_init`` runs in the worker after it loaded the application, so the tracer provider
(and its ``service.name``, the profiles' default ``application_name``) is set by then.
``post_fork`` runs earlier, before the worker loads the application: without ``preload_app`` it
finds no provider and falls back to ``OTEL_SERVICE_NAME`` or an explicit ``application_name``.

Do not also call :func:`span_profiles.start_profiler` at import time with ``preload_app = True``:
that starts an agent in the master, which every worker then forks from.

CPU pinning: the worker number (``worker.age``) chooses the worker's CPU, so consecutive workers
get different CPUs. The event-loop thread is pinned when it announces itself
(:func:`span_profiles.pin_current_thread`, called by the ASGI middleware at lifespan startup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from span_profiles._profiler import start_profiler

__all__ = ["make_post_fork", "make_post_worker_init", "post_fork", "post_worker_init"]


def make_post_fork(**options: Any) -> Callable[[Any, Any], None]:
    """A gunicorn ``post_fork(server, worker)`` hook starting the profiler with ``options``."""

    def post_fork(server: Any, worker: Any) -> None:
        """Start the profiler in the freshly forked worker (never raises for agent failures)."""
        age = getattr(worker, "age", None)
        start_profiler(cpu_index=age if isinstance(age, int) else None, **options)

    return post_fork


post_fork: Callable[[Any, Any], None] = make_post_fork()
"""gunicorn ``post_fork`` hook: start the profiler in the worker with settings from the env."""


def make_post_worker_init(**options: Any) -> Callable[[Any], None]:
    """A gunicorn ``post_worker_init(worker)`` hook starting the profiler with ``options``."""
    start = make_post_fork(**options)

    def post_worker_init(worker: Any) -> None:
        """Start the profiler in the worker once it loaded the application."""
        start(None, worker)

    return post_worker_init


post_worker_init: Callable[[Any], None] = make_post_worker_init()
"""gunicorn ``post_worker_init`` hook: start the profiler in the ready worker (env settings)."""
