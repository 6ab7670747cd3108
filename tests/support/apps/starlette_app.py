"""A small Starlette app for the end-to-end test, served by a real uvicorn subprocess.

``E2E_RECEIVER_URL`` is where the real agent pushes. Two endpoints burn CPU in distinctly named
functions (``burn_alpha``, ``burn_beta``) in slices with ``await asyncio.sleep(0)`` between them;
every response carries its root span id in ``x-span-id``. ``E2E_MIDDLEWARE`` picks the span
middleware: ``ours`` (``span_profiles.asgi.SpanProfilesMiddleware``, the default when it exists)
or ``otel`` (OpenTelemetry's ASGI middleware).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import span_profiles
from span_profiles._profiler import pin_current_thread, start_profiler

SLICE_NS = 2_000_000
SLICES = 40


def burn_alpha(duration_ns: int) -> None:
    """Spin on the CPU for ``duration_ns`` (the alpha endpoint's work)."""
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


def burn_beta(duration_ns: int) -> None:
    """Spin on the CPU for ``duration_ns`` (the beta endpoint's work)."""
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


def _span_header() -> dict[str, str]:
    return {"x-span-id": format(trace.get_current_span().get_span_context().span_id, "016x")}


async def alpha(request: Request) -> Response:
    """Burn in ``burn_alpha``, yielding to the loop between slices."""
    for _ in range(SLICES):
        burn_alpha(SLICE_NS)
        await asyncio.sleep(0)
    return PlainTextResponse("alpha", headers=_span_header())


async def beta(request: Request) -> Response:
    """Burn in ``burn_beta``, yielding to the loop between slices."""
    for _ in range(SLICES):
        burn_beta(SLICE_NS)
        await asyncio.sleep(0)
    return PlainTextResponse("beta", headers=_span_header())


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """uvicorn imports the app before its loop runs: the loop thread joins the agent's CPU here."""
    pin_current_thread()
    yield


def build() -> Any:
    """Tracing, labels, the real agent, and the app wrapped in a span middleware."""
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-starlette"}))
    trace.set_tracer_provider(provider)
    span_profiles.instrument(tracer_provider=provider)
    started = start_profiler(
        tracer_provider=provider,
        server_address=os.environ["E2E_RECEIVER_URL"],
        upload_interval=1,
    )
    if not started:
        raise RuntimeError("the profiler did not start")
    app = Starlette(routes=[Route("/alpha", alpha), Route("/beta", beta)], lifespan=lifespan)
    choice = os.environ.get("E2E_MIDDLEWARE", "auto")
    if choice in ("auto", "ours"):
        try:
            from span_profiles.asgi import SpanProfilesMiddleware
        except ImportError:
            if choice == "ours":
                raise
        else:
            return SpanProfilesMiddleware(app, tracer_provider=provider)
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, tracer_provider=provider)


app = build()
