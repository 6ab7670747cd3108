"""A small Flask shop whose views burn CPU in distinctly named functions.

Run it (from this directory) with ``gunicorn -c gunicorn.conf.py app:app`` and
``span-profiles serve`` next to it; see README.md. Each CPU-heavy view burns in its own function,
so the per-span profiles in the receiver (``span-profiles top --span-id ...``) visibly differ:

* ``GET /checkout``: ``burn_checkout`` on the request thread, plus line items priced in
  ``burn_pricing`` by jobs on a ``ThreadPoolExecutor`` (child work of the same request).
* ``GET /search``: ``burn_search``.
* ``GET /report``: ``render_report``.
* ``GET /items/<int:item_id>``: no CPU to speak of; shows a URL rule as the span name.

Every response carries the request's span id in ``x-span-id``: it is the profile id Grafana
uses, and ``span-profiles top --span-id <it>`` shows that one request's CPU profile.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, Response, request
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from span_profiles.flask import SpanProfiles

SERVICE_NAME = "example-flask"
DEFAULT_MS = 150
"""A CPU-heavy request burns long enough for a 100 Hz sampler to see it several times."""
MAX_MS = 2000


# One function per kind of work: a profile shows the function, so they must not share a name.
# They burn the calling thread's CPU time (not wall time), so that a request gets its share of
# samples however many other requests compete for the GIL.
def burn_checkout(ms: float) -> int:
    """Validate a cart: the checkout view's own CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total


def burn_pricing(ms: float) -> int:
    """Price one line item: checkout's jobs on the thread pool."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i % 7
    return total


def burn_search(ms: float) -> int:
    """Rank search results: the search view's CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i ^ 5
    return total


def render_report(ms: float) -> int:
    """Render a report: the report view's CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i | 3
    return total


def requested_ms() -> int:
    """The ``ms`` query parameter (CPU milliseconds to burn), bounded."""
    return max(1, min(request.args.get("ms", DEFAULT_MS, type=int) or DEFAULT_MS, MAX_MS))


# Spans need an SDK provider; service.name becomes the profiles' service_name, which is how
# Grafana finds a span's profile. Add your exporter (OTLP, console...) here as usual.
trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME})))

app = Flask(__name__)
# Profiles go to http://127.0.0.1:4040 (`span-profiles serve`) unless PYROSCOPE_SERVER_ADDRESS or
# app.config["SPAN_PROFILES_SERVER_ADDRESS"] says otherwise.
SpanProfiles(app)

# Shared by the requests of a worker process; span-profiles carries each submitter's span to the
# job, so a job's samples belong to the request that submitted it.
pricing_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pricing")


@app.after_request
def add_span_id(response: Response) -> Response:
    """Tell the client which span (and so which profile) served it."""
    span_id = trace.get_current_span().get_span_context().span_id
    response.headers["x-span-id"] = format(span_id, "016x")
    return response


@app.get("/health")
def health() -> dict[str, Any]:
    """Liveness probe; no CPU. ``pid`` tells which gunicorn worker answered."""
    return {"status": "ok", "pid": os.getpid()}


@app.get("/checkout")
def checkout() -> dict[str, Any]:
    """Burn in ``burn_checkout``, and price two line items on the thread pool meanwhile."""
    ms = requested_ms()
    own = ms * 2 // 3
    lines = [pricing_pool.submit(burn_pricing, (ms - own) / 2) for _ in range(2)]
    burn_checkout(own)
    return {"endpoint": "checkout", "lines": len([line.result() for line in lines])}


@app.get("/search")
def search() -> dict[str, Any]:
    """Burn in ``burn_search``."""
    burn_search(requested_ms())
    return {"endpoint": "search", "query": request.args.get("q", "shoes")}


@app.get("/report")
def report() -> dict[str, Any]:
    """Burn in ``render_report``."""
    render_report(requested_ms())
    return {"endpoint": "report"}


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, Any]:
    """A cheap view; its span (and label) name is the rule ``GET /items/<int:item_id>``."""
    return {"endpoint": "items", "item_id": item_id}
