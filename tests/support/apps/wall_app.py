"""A Starlette app with known waits, for wall-clock profiles (served by a real uvicorn).

Every part of a request waits a known time (``ms`` milliseconds) in a function of its own, so a
wall sample says which part it is by the innermost of these names on its stack:

* ``/waits``: ``part_sleep`` (``asyncio.sleep``), ``part_lock`` (an ``asyncio.Lock`` held by a
  task of no request), ``part_http`` (a GET through httpx to a slow HTTP server in another
  process, ``WALL_APP_SLOW_URL``: :func:`tests.support.wall.slow_server`),
  ``part_child`` whose child task ``child_part`` sleeps, awaited by its parent;
* ``/sync``: a sync endpoint (Starlette's thread pool) sleeping in ``part_thread_sleep``;
* ``/load``: ``asyncio.sleep`` of ``ms`` and a little CPU (the cost benchmark);
* ``/fanout``: ``tasks`` child tasks each sleeping ``ms`` (10,000 suspended tasks);
* ``/spans``: every finished local root span's duration and its parts' own (measured around
  each part; span id -> seconds);
* ``/lag``: the loop-lag probe (the longest late wake-up of a 1 ms sleep since the last
  ``?reset=1``), the longest garbage collection, and the wall producer's counters;
* ``/ready``: 200.

Responses carry ``x-span-id``. Environment: ``E2E_RECEIVER_URL`` (where profiles go),
``WALL_APP_SERVICE`` (``service.name``, default ``wall-e2e``), ``WALL_APP_PROFILER=off`` (no
sampler: the cost baseline without any profiler). ``SPAN_PROFILES_WALL``,
``SPAN_PROFILES_SAMPLER`` and the other settings come from the environment as in any app.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import span_profiles
from span_profiles import _profiler
from span_profiles._profiler import start_profiler

_durations: dict[str, float] = {}
_parts: dict[str, dict[str, float]] = {}
"""Span id -> each part's own duration, measured around it (the truth wall profiles are judged
against: an HTTP call takes its server's delay and the client's own time)."""
_slow_url = os.environ.get("WALL_APP_SLOW_URL", "")
_client: httpx.AsyncClient | None = None
_lag = {"max_ms": 0.0, "samples": 0, "gc_max_ms": 0.0}
_gc_began = [0.0]
_gc_began_ns = [0]
_gc_long: list[tuple[int, int]] = []
"""Collections of 5 ms or more: ``(start, end)`` in ``time.time_ns()`` (the spans' clock), the
last 1,000."""
_edges: dict[str, tuple[int, int]] = {}
"""Span id -> its start and end (``time.time_ns()``)."""


def _gc_pause(phase: str, info: dict[str, Any]) -> None:
    """The longest garbage collection: a pause of the loop that is no one's code."""
    if phase == "start":
        _gc_began[0] = time.perf_counter()
        _gc_began_ns[0] = time.time_ns()
    else:
        took = (time.perf_counter() - _gc_began[0]) * 1000
        _lag["gc_max_ms"] = max(_lag["gc_max_ms"], took)
        if took >= 5:
            _gc_long.append((_gc_began_ns[0], time.time_ns()))
            del _gc_long[:-1000]


def _collections_in(start: int, end: int) -> list[tuple[float, float]]:
    """The long collections within ``start``..``end``: ms after the start, ms long."""
    return [
        (round((max(a, start) - start) / 1e6, 2), round((min(b, end) - max(a, start)) / 1e6, 2))
        for a, b in _gc_long
        if a < end and b > start
    ]


class _Durations(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is not None and not span.parent.is_remote:
            return
        context = span.context
        if context is None or span.start_time is None or span.end_time is None:
            return
        span_id = format(context.span_id, "016x")
        _durations[span_id] = (span.end_time - span.start_time) / 1e9
        _edges[span_id] = (span.start_time, span.end_time)


@contextlib.contextmanager
def _timed(name: str) -> Iterator[None]:
    span_id = format(trace.get_current_span().get_span_context().span_id, "016x")
    began = time.perf_counter()
    try:
        yield
    finally:
        parts = _parts.setdefault(span_id, {})
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - began


def _ms(request: Request, default: int = 200) -> int:
    return int(request.query_params.get("ms", default))


def _span_header() -> dict[str, str]:
    span_id = format(trace.get_current_span().get_span_context().span_id, "016x")
    return {"x-span-id": span_id}


async def part_sleep(ms: int) -> None:
    with _timed("part_sleep"):
        await asyncio.sleep(ms / 1000)


async def _hold(lock: asyncio.Lock, held: asyncio.Event, ms: int) -> None:
    async with lock:
        held.set()
        await asyncio.sleep(ms / 1000)


async def part_lock(ms: int) -> None:
    with _timed("part_lock"):
        lock = asyncio.Lock()
        held = asyncio.Event()
        # The holder is another task, of no request: created in an empty context.
        contextvars.Context().run(asyncio.ensure_future, _hold(lock, held, ms))
        await held.wait()
        async with lock:
            pass


async def part_http(ms: int) -> None:
    global _client
    with _timed("part_http"):
        if _client is None:
            _client = httpx.AsyncClient(timeout=30)
        response = await _client.get(f"{_slow_url}/?ms={ms}")
        response.raise_for_status()


async def child_part(ms: int) -> None:
    with _timed("child_part"):
        await asyncio.sleep(ms / 1000)


async def part_child(ms: int) -> None:
    await asyncio.create_task(child_part(ms))


async def waits(request: Request) -> Response:
    ms = _ms(request)
    await part_sleep(ms)
    await part_lock(ms)
    await part_http(ms)
    await part_child(ms)
    return PlainTextResponse("ok", headers=_span_header())


def part_thread_sleep(ms: int) -> None:
    with _timed("part_thread_sleep"):
        time.sleep(ms / 1000)


def sync(request: Request) -> Response:
    part_thread_sleep(_ms(request))
    return PlainTextResponse("ok", headers=_span_header())


def _work(n: int) -> int:
    return sum(i * i for i in range(n))


async def load(request: Request) -> Response:
    await asyncio.sleep(_ms(request, 50) / 1000)
    _work(200)
    return PlainTextResponse("ok", headers=_span_header())


async def fanout(request: Request) -> Response:
    ms = _ms(request, 5000)
    count = int(request.query_params.get("tasks", "100"))
    await asyncio.gather(*(asyncio.create_task(asyncio.sleep(ms / 1000)) for _ in range(count)))
    return PlainTextResponse("ok", headers=_span_header())


def spans(request: Request) -> Response:
    return JSONResponse(
        {
            span: {
                "duration": d,
                "parts": _parts.get(span, {}),
                "collections": _collections_in(*_edges[span]) if span in _edges else [],
            }
            for span, d in _durations.items()
        }
    )


def _wall_stats() -> dict[str, Any]:
    running = _profiler.running_sampler()
    if running is None:
        return {}
    if running.name == "builtin":
        stats = getattr(running, "last_stats", {}) or {}
        return dict(stats.get("wall") or {}, sampler_pid=running.process_id())  # type: ignore[attr-defined]
    from span_profiles._samplers.wall.inprocess import WALL

    return dict(WALL.stats) if WALL.running() else {}


def lag(request: Request) -> Response:
    body = {
        "lag_max_ms": _lag["max_ms"],
        "lag_samples": _lag["samples"],
        "gc_max_ms": _lag["gc_max_ms"],
        "wall": _wall_stats(),
    }
    if request.query_params.get("reset") == "1":
        _lag.update(max_ms=0.0, samples=0, gc_max_ms=0.0)
    return JSONResponse(body)


def ready(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _probe() -> None:
    """The loop's lag: how late a 1 ms sleep wakes up (the longest stall of the loop)."""
    while True:
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        late = (time.perf_counter() - began) * 1000 - 1
        _lag["samples"] += 1
        if late > _lag["max_ms"]:
            _lag["max_ms"] = late


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    probe = contextvars.Context().run(asyncio.ensure_future, _probe())
    yield
    probe.cancel()


def build() -> Any:
    gc.callbacks.append(_gc_pause)
    service = os.environ.get("WALL_APP_SERVICE", "wall-e2e")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(_Durations())
    trace.set_tracer_provider(provider)
    span_profiles.instrument(tracer_provider=provider)
    if os.environ.get("WALL_APP_PROFILER") != "off" and not start_profiler(
        tracer_provider=provider, server_address=os.environ["E2E_RECEIVER_URL"]
    ):
        raise RuntimeError("the profiler did not start")
    app = Starlette(
        routes=[
            Route("/waits", waits),
            Route("/sync", sync),
            Route("/load", load),
            Route("/fanout", fanout),
            Route("/spans", spans),
            Route("/lag", lag),
            Route("/ready", ready),
        ],
        lifespan=_lifespan,
    )
    from span_profiles.asgi import SpanProfilesMiddleware

    return SpanProfilesMiddleware(app, tracer_provider=provider)


if os.environ.get("SP_IMPORT_ONLY") != "1":
    app = build()
