"""Cost per request of the middleware: ours against OTel's, with and without metrics.

Run: ``python benchmarks/otel_middleware.py`` (``--quick`` for a short run). Drives a trivial
ASGI app (one ``http.response.start`` and one body) and a trivial WSGI app in-process, with no
server, so the numbers are the middleware's own cost per request: CPU time of this (single-threaded)
process, which a shared machine disturbs less than wall time. Configurations are interleaved
round by round; the table shows the median of the rounds and every round, in CPU microseconds
per request, and is written to ``benchmarks/results/otel_middleware.md``.

Rows, for ASGI and for WSGI:
* bare: the app alone;
* OTel: OTel's ``OpenTelemetryMiddleware`` (ASGI: ``exclude_spans=["receive", "send"]`` as well,
  the fair comparison with our one span);
* ours: ``SpanProfilesMiddleware`` / ``SpanProfilesWSGIMiddleware``, the same providers;
both with the no-op meter (no ``meter_provider``) and with an SDK ``MeterProvider``.
The tracer provider is an SDK one with no processor, and span-profiles is instrumented with a
RecordingSink, so ours pays for its labels as in production (minus the agent).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OTelASGI
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OTelWSGI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles.asgi import SpanProfilesMiddleware
from span_profiles.testing import RecordingSink
from span_profiles.wsgi import SpanProfilesWSGIMiddleware

RESULTS = Path(__file__).parent / "results"

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("bench", 80),
}
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/items/42",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench",
    "SERVER_PORT": "80",
    "HTTP_HOST": "bench",
    "HTTP_USER_AGENT": "bench",
    "REMOTE_ADDR": "127.0.0.1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
}


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """One small response."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """One small response."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: Any) -> None:
    return None


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


def time_asgi(app: Any, requests: int) -> float:
    """CPU microseconds per request."""

    async def run() -> float:
        start = time.process_time()
        for _ in range(requests):
            await app(dict(SCOPE), _receive, _send)
        return time.process_time() - start

    return asyncio.run(run()) / requests * 1e6


def time_wsgi(app: Any, requests: int) -> float:
    """CPU microseconds per request."""
    start = time.process_time()
    for _ in range(requests):
        body = app(dict(ENVIRON), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.process_time() - start) / requests * 1e6


def configurations(tracer_provider: Any) -> dict[str, Callable[[int], float]]:
    """Every row, built once (each with its own meter provider where it has one)."""

    def meter() -> dict[str, Any]:
        return {"meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()])}

    tp = {"tracer_provider": tracer_provider}
    asgi = {
        "ASGI bare": asgi_app,
        "ASGI OTel, no-op meter": OTelASGI(asgi_app, exclude_spans=["receive", "send"], **tp),
        "ASGI ours, no-op meter": SpanProfilesMiddleware(asgi_app, **tp),
        "ASGI OTel, SDK meter": OTelASGI(
            asgi_app, exclude_spans=["receive", "send"], **tp, **meter()
        ),
        "ASGI ours, SDK meter": SpanProfilesMiddleware(asgi_app, **tp, **meter()),
    }
    wsgi = {
        "WSGI bare": wsgi_app,
        "WSGI OTel, no-op meter": OTelWSGI(wsgi_app, **tp),
        "WSGI ours, no-op meter": SpanProfilesWSGIMiddleware(wsgi_app, **tp),
        "WSGI OTel, SDK meter": OTelWSGI(wsgi_app, **tp, **meter()),
        "WSGI ours, SDK meter": SpanProfilesWSGIMiddleware(wsgi_app, **tp, **meter()),
    }
    rows: dict[str, Callable[[int], float]] = {}
    for name, app in asgi.items():
        rows[name] = functools.partial(time_asgi, app)
    for name, app in wsgi.items():
        rows[name] = functools.partial(time_wsgi, app)
    return rows


def main() -> None:
    """Run the rounds and print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    args = parser.parse_args()
    requests, rounds = (2_000, 3) if args.quick else (5_000, 7)
    tracer_provider = TracerProvider()
    span_profiles.instrument(tracer_provider=tracer_provider, sink=RecordingSink())
    rows = configurations(tracer_provider)
    for run in rows.values():
        run(200)  # warm-up: lazy start, caches
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, run in rows.items():
            samples[name].append(run(requests))
    lines = [
        f"Python {platform.python_version()} on {platform.machine()}, {requests} requests x "
        f"{rounds} rounds, interleaved; CPU µs per request (median, then every round).",
        "",
        "| configuration | median µs | rounds |",
        "|---|---:|---|",
    ]
    for name, values in samples.items():
        rounds_text = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):.1f} | {rounds_text} |")
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "otel_middleware.md").write_text(
            f"Command: `{Path(sys.argv[0]).name}`\n\n{text}\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
