"""The app of ``benchmarks/harm.py``: Starlette, with or without span-profiles (``HARM_MODE``).

``HARM_MODE=span-profiles`` wraps it in :class:`span_profiles.asgi.SpanProfilesMiddleware` with
the default settings (labels, the real agent started lazily inside the loop, ``pin_cpu=auto``);
``HARM_MODE=agent`` is what a user runs before adding span-profiles: OpenTelemetry's ASGI
middleware on the same provider and the pyroscope-io agent configured as its README does it;
``HARM_MODE=none`` is the app with neither.

Routes: ``/hash`` runs PBKDF2 (releases the GIL) in ``anyio.to_thread``; ``/cpu`` burns
``CPU_MS`` of pure Python on the loop; ``/threads`` starts one worker thread of every kind from
the loop thread and answers their CPU masks; ``/where`` answers the pid, the loop thread's CPU
and the placement; anything else answers ``ok``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import threading
import time
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

MODE = os.environ.get("HARM_MODE", "span-profiles")
CPU_NS = int(float(os.environ.get("CPU_MS", "5")) * 1e6)
HASH_ROUNDS = int(os.environ.get("HASH_ROUNDS", "20000"))


def _mask() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _last_cpu() -> int:
    with open("/proc/thread-self/stat", "rb") as file:
        return int(file.read().rpartition(b")")[2].split()[36])


async def hash_password(request: Request) -> Response:
    """PBKDF2-SHA256 in a worker thread: hashlib releases the GIL, so threads run in parallel."""
    digest = await anyio.to_thread.run_sync(
        hashlib.pbkdf2_hmac, "sha256", b"password", b"salt", HASH_ROUNDS
    )
    return PlainTextResponse(digest.hex()[:8])


async def cpu(request: Request) -> Response:
    """Pure-Python CPU work on the loop thread."""
    end = time.perf_counter_ns() + CPU_NS
    while time.perf_counter_ns() < end:
        pass
    return PlainTextResponse("ok")


async def threads(request: Request) -> Response:
    """The CPU masks of worker threads of every kind, started from the loop thread."""
    loop = asyncio.get_running_loop()
    seen: dict[str, Any] = {"loop": _mask()}
    seen["anyio.to_thread"] = await anyio.to_thread.run_sync(_mask)
    seen["asyncio.to_thread"] = await asyncio.to_thread(_mask)
    seen["run_in_executor default"] = await loop.run_in_executor(None, _mask)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        seen["run_in_executor user pool"] = await loop.run_in_executor(pool, _mask)
    try:
        from asgiref.sync import sync_to_async

        seen["asgiref sync_to_async"] = await sync_to_async(_mask, thread_sensitive=False)()
    except ImportError:
        pass
    box: list[list[int]] = []
    thread = threading.Thread(target=lambda: box.append(_mask()))
    thread.start()
    thread.join()
    seen["threading.Thread"] = box[0]
    return PlainTextResponse(json.dumps(seen))


async def where(request: Request) -> Response:
    """pid, the loop thread's current CPU and (with span-profiles) the placement."""
    answer: dict[str, Any] = {"pid": os.getpid(), "loop_cpu": _last_cpu(), "mask": _mask()}
    if MODE == "span-profiles":
        from span_profiles import _placement

        answer["pinned_cpu"] = _placement.current_placement().cpu
    return PlainTextResponse(json.dumps(answer))


async def ok(request: Request) -> Response:
    """Readiness."""
    return PlainTextResponse("ok")


def build() -> Any:
    """The app for ``HARM_MODE``."""
    routes = [
        Route("/hash", hash_password),
        Route("/cpu", cpu),
        Route("/threads", threads),
        Route("/where", where),
        Route("/{rest:path}", ok),
    ]
    app: Any = Starlette(routes=routes)
    if MODE in ("span-profiles", "agent"):
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create({"service.name": "harm"}))
        trace.set_tracer_provider(provider)
    if MODE == "span-profiles":
        from span_profiles.asgi import SpanProfilesMiddleware

        app = SpanProfilesMiddleware(app, tracer_provider=provider)
    elif MODE == "agent":
        import pyroscope
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        pyroscope.configure(
            application_name="harm",
            server_address=os.environ["PYROSCOPE_SERVER_ADDRESS"],
            # The one agent option harm.py varies (``PYROSCOPE_GIL_ONLY``), as span-profiles reads it.
            gil_only=os.environ.get("PYROSCOPE_GIL_ONLY", "true").lower() != "false",
        )
        app = OpenTelemetryMiddleware(app, tracer_provider=provider)
    elif MODE != "none":
        raise SystemExit(f"HARM_MODE must be span-profiles, agent or none, not {MODE!r}")
    return app


app = build()
