"""Logs inside FastAPI endpoints: ``profile_id`` is the id that labels the request's samples.

Recent FastAPI versions start spans of their own (``FastAPI(telemetry=...)``): in an endpoint,
the current span is FastAPI's ``fastapi.endpoint`` child, while the samples carry the request
span's id. The log helpers must give that id as ``profile_id``.
"""

from __future__ import annotations

import inspect
import io
from typing import Any

import pytest

pytest.importorskip("fastapi.routing")
httpx = pytest.importorskip("httpx")

from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from fastapi import FastAPI  # noqa: E402
from span_profiles import PROFILE_ID_ATTRIBUTE  # noqa: E402
from span_profiles.fastapi import instrument_app  # noqa: E402
from span_profiles.logging import add_span_profiles_ids, current_profile_id  # noqa: E402
from tests.support.logs import make_logger  # noqa: E402

pytestmark = pytest.mark.anyio

NATIVE_TELEMETRY = "telemetry" in inspect.signature(FastAPI).parameters
"""FastAPI starts its own server span and per-operation child spans."""


async def test_endpoint_logs_carry_the_request_spans_id_as_profile_id(instrumented: Any) -> None:
    """Async and sync endpoints: profile_id = the samples' span_id = the server span's profile id."""
    stream = io.StringIO()
    logger = make_logger(stream)
    seen: dict[str, dict[str, Any]] = {}
    options: dict[str, Any] = {}
    if NATIVE_TELEMETRY:
        options["telemetry"] = {"tracer_provider": instrumented.provider}
    app = FastAPI(**options)

    def record(where: str) -> None:
        logger.info(where)
        seen[where] = {
            "labels": instrumented.sink.current(),
            "current": format(trace.get_current_span().get_span_context().span_id, "016x"),
            "profile_id": current_profile_id(),
            "structlog": add_span_profiles_ids(None, "info", {}),
        }

    @app.get("/async/{n}")
    async def async_endpoint(n: int) -> int:
        record("async")
        return n

    @app.get("/sync/{n}")
    def sync_endpoint(n: int) -> int:
        record("sync")
        return n

    instrument_app(app, tracer_provider=instrumented.provider)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/async/1")).status_code == 200
        assert (await http.get("/sync/2")).status_code == 200
    servers = {
        s.name: s for s in instrumented.exporter.get_finished_spans() if s.kind is SpanKind.SERVER
    }
    assert sorted(servers) == ["GET /async/{n}", "GET /sync/{n}"]
    lines = stream.getvalue().splitlines()
    for where, route in (("async", "GET /async/{n}"), ("sync", "GET /sync/{n}")):
        server = servers[route]
        request_id = format(server.context.span_id, "016x")
        assert server.attributes is not None
        assert server.attributes[PROFILE_ID_ATTRIBUTE] == request_id
        got = seen[where]
        assert got["labels"]["span_id"] == request_id
        assert got["profile_id"] == request_id
        assert got["structlog"]["profile_id"] == request_id
        assert f"{server.context.trace_id:032x} {got['current']} {request_id} {where}" in lines
        if NATIVE_TELEMETRY:
            # The trap the docs warn about: the current span is FastAPI's endpoint span.
            assert got["current"] != request_id
            assert got["structlog"]["span_id"] == got["current"]
