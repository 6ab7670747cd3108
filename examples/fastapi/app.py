"""A small FastAPI shop whose endpoints burn CPU in distinctly named functions.

Run it (from this directory) with ``uvicorn app:app`` and ``span-profiles serve`` next to it; see
README.md. Every CPU-heavy endpoint burns in its own function, so the per-span profiles in the
receiver (``span-profiles top --span-id ...``) visibly differ:

* ``GET /checkout`` (async): ``burn_checkout`` on the event loop, plus two child tasks that
  price line items in ``burn_pricing``.
* ``GET /search`` (sync ``def``, FastAPI runs it on a worker thread): ``burn_search``.
* ``GET /report`` (async): hands ``render_report`` to the thread pool.
* ``GET /items/{item_id}``: no CPU to speak of; shows a route template as the span name.

Concurrency goes through anyio, Starlette's own layer, so the same app runs on asyncio (uvicorn)
and on trio (``hypercorn --worker-class trio``); under uvicorn, anyio's task groups are asyncio
tasks and ``anyio.to_thread.run_sync`` is the loop's thread pool.

Every response carries the request's span id in ``x-span-id``: it is the profile id Grafana
uses, and ``span-profiles top --span-id <it>`` shows that one request's CPU profile.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from span_profiles.fastapi import instrument_app

SERVICE_NAME = "example-fastapi"

# A CPU-heavy request should burn long enough for a 100 Hz sampler to see it several times.
DEFAULT_MS = 150
MAX_MS = 2000
SLICE_MS = 10
"""The event loop gets control back this often inside a burning async endpoint."""


# One function per kind of work: a profile shows the function, so they must not share a name.
# They burn the calling thread's CPU time (not wall time), so that a request gets its share of
# samples however many other requests compete for the GIL.
def burn_checkout(ms: float) -> int:
    """Validate a cart: the checkout endpoint's own CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total


def burn_pricing(ms: float) -> int:
    """Price one line item: the CPU of checkout's child tasks."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i % 7
    return total


def burn_search(ms: float) -> int:
    """Rank search results: the search endpoint's CPU (on a worker thread)."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i ^ 5
    return total


def render_report(ms: float) -> int:
    """Render a report: the CPU the report endpoint hands to the thread pool."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i | 3
    return total


def current_span_id() -> str:
    """The current span's id as 16 hex digits.

    Read in a middleware inside span-profiles' one, this is the request's root span: the span
    whose id labels the request's samples. Inside an endpoint it may be a child span (recent
    FastAPI versions start a ``fastapi.endpoint`` span of their own).
    """
    return format(trace.get_current_span().get_span_context().span_id, "016x")


class SpanIdHeaderMiddleware:
    """Adds ``x-span-id`` (the request's span id) to every HTTP response.

    It must run inside span-profiles' middleware, where the request span is current: add it
    before calling ``instrument_app``, which puts its own middleware outermost.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the header to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-span-id", current_span_id().encode())

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        await self.app(scope, receive, send_with_header)


# Spans need an SDK provider; service.name becomes the profiles' service_name, which is how
# Grafana finds a span's profile. Add your exporter (OTLP, console...) here as usual.
trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME})))

app = FastAPI(title=SERVICE_NAME)
app.add_middleware(SpanIdHeaderMiddleware)
# Profiles go to http://127.0.0.1:4040 (`span-profiles serve`) unless PYROSCOPE_SERVER_ADDRESS
# says otherwise; the agent starts lazily in the serving process, at lifespan startup.
instrument_app(app)

Millis = Query(DEFAULT_MS, ge=1, le=MAX_MS, description="CPU milliseconds to burn")


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe; no CPU."""
    return {"status": "ok"}


@app.get("/checkout")
async def checkout(ms: int = Millis) -> dict[str, Any]:
    """Burn in ``burn_checkout`` on the loop, then price two line items in child tasks."""
    own = ms * 2 // 3
    done = 0
    while done < own:
        step = min(SLICE_MS, own - done)
        burn_checkout(step)
        done += step
        await anyio.sleep(0)  # let the other requests' tasks run: labels must follow them
    priced: list[int] = []

    async def price_line_item(line: int) -> None:
        for _ in range(2):
            priced.append(burn_pricing((ms - own) / 4))
            await anyio.sleep(0)

    async with anyio.create_task_group() as children:
        for line in range(2):
            children.start_soon(price_line_item, line)
    return {"endpoint": "checkout", "lines": len(priced)}


@app.get("/search")
def search(q: str = "shoes", ms: int = Millis) -> dict[str, Any]:
    """A sync endpoint: FastAPI runs it on a worker thread, where it burns in ``burn_search``."""
    burn_search(ms)
    return {"endpoint": "search", "query": q}


@app.get("/report")
async def report(ms: int = Millis) -> dict[str, Any]:
    """Hand ``render_report`` to the thread pool and await it."""
    await anyio.to_thread.run_sync(render_report, ms)
    return {"endpoint": "report"}


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, Any]:
    """A cheap endpoint; its span (and label) name is the template ``GET /items/{item_id}``."""
    return {"endpoint": "items", "item_id": item_id}
