"""gunicorn hooks: start the profiler in each worker, after the fork.

The pyroscope-io agent must start after the last ``fork()`` (its native threads do not survive
one). gunicorn forks its workers from the master, so start the agent in ``post_fork``, which runs
in the new worker. In ``gunicorn.conf.py``::

    from span_profiles.gunicorn import post_fork

or, with options (any :class:`~span_profiles.Settings` field)::

    from span_profiles.gunicorn import make_post_fork

    post_fork = make_post_fork(upload_interval=15, tags={"region": "eu"})

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

__all__ = ["make_post_fork", "post_fork"]


def make_post_fork(**options: Any) -> Callable[[Any, Any], None]:
    """A gunicorn ``post_fork(server, worker)`` hook starting the profiler with ``options``."""

    def post_fork(server: Any, worker: Any) -> None:
        """Start the profiler in the freshly forked worker (never raises for agent failures)."""
        age = getattr(worker, "age", None)
        start_profiler(cpu_index=age if isinstance(age, int) else None, **options)

    return post_fork


post_fork: Callable[[Any, Any], None] = make_post_fork()
"""gunicorn ``post_fork`` hook: start the profiler in the worker with settings from the env."""
