"""A bare ASGI app for the placement and exit tests, served by real uvicorn/gunicorn processes.

The profiler starts inside the event loop at lifespan startup (as the adapters' lazy start does),
so the loop thread is pinned, and stops at lifespan shutdown (bounded by ``shutdown_timeout``). ``GET /burn`` spins ``BURN_MS`` of CPU; ``GET /placement`` answers
:func:`span_profiles._placement.current_placement` as JSON. ``PYROSCOPE_*``/``SPAN_PROFILES_*``
environment variables configure the agent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import span_profiles
from span_profiles import _placement

logging.basicConfig(level=os.environ.get("BURN_APP_LOG", "WARNING"))
BURN_NS = int(float(os.environ.get("BURN_MS", "20")) * 1e6)


def burn(duration_ns: int) -> None:
    """Spin on the CPU for ``duration_ns``."""
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI entry point: lifespan starts the profiler; two GET routes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                span_profiles.start_profiler(application_name="burn-app")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn re-raises SIGTERM after its shutdown: no atexit hook runs then.
                span_profiles.stop_profiler()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/burn":
        burn(BURN_NS)
        body = b"ok"
    else:
        body = json.dumps(dataclasses.asdict(_placement.current_placement())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
