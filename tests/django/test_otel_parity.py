"""The Django middleware reaches OTel's options through ``SPAN_PROFILES``.

The same Django project (the test URLconf) is served by Django's ``WSGIHandler`` twice: wrapped in
OTel's WSGI middleware with ours disabled ("theirs"), and with ours configured through
``SPAN_PROFILES = {...}`` ("ours"). Spans, metrics, header capture, hooks and exclusion are
compared. Ours names the span after the URL pattern.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("django.conf")
pytest.importorskip("opentelemetry.instrumentation.wsgi")

from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

from span_profiles import SettingsError
from tests.support.otel_parity import (
    Telemetry,
    attributes,
    exception_events,
    header_values,
    same_keys,
    telemetry,
    trace_response,
    without_route,
)
from tests.support.wsgi_client import call

__all__ = ["telemetry", "trace_response"]  # fixtures


def theirs(t: Telemetry, **options: Any) -> Any:
    """Django's WSGI handler in OTel's WSGI middleware (ours switched off)."""
    with override_settings(SPAN_PROFILES={"enabled": False}):
        handler = WSGIHandler()
    return OpenTelemetryMiddleware(
        handler, tracer_provider=t.tracer_provider, meter_provider=t.meter_provider, **options
    )


def ours(t: Telemetry, **options: Any) -> Any:
    """Django's WSGI handler with ours configured by SPAN_PROFILES."""
    config = {"tracer_provider": t.tracer_provider, "meter_provider": t.meter_provider, **options}
    with override_settings(SPAN_PROFILES=config):
        return WSGIHandler()


def test_span_and_metrics_match(telemetry: Telemetry) -> None:
    """Same attributes and metrics (ours adds http.route); ours is named after the pattern."""
    call(theirs(telemetry), "/items/7")
    their_span = telemetry.server_span()
    their_points = telemetry.points()
    telemetry.reset()
    fresh = telemetry.with_fresh_meter()
    call(ours(fresh), "/items/7")
    our_span = telemetry.server_span()
    same_keys(attributes(our_span), attributes(their_span))
    assert (their_span.name, our_span.name) == ("GET /items/7", "GET items/<int:pk>")
    assert without_route(fresh.points()) == their_points
    fresh.meter_provider.shutdown()


def test_hooks_through_settings(telemetry: Telemetry) -> None:
    """request_hook / response_hook in SPAN_PROFILES get what OTel's WSGI hooks get."""
    calls: dict[str, list[Any]] = {}

    def hooks(who: str) -> dict[str, Any]:
        log = calls.setdefault(who, [])
        return {
            "request_hook": lambda span, environ: log.append(("request", environ["PATH_INFO"])),
            "response_hook": lambda span, environ, status, headers: log.append(
                ("response", status, dict(headers)["Content-Type"])
            ),
        }

    call(theirs(telemetry, **hooks("theirs")), "/items/7")
    call(ours(telemetry, **hooks("ours")), "/items/7")
    assert calls["ours"] == calls["theirs"]
    assert calls["ours"] == [("request", "/items/7"), ("response", "200 OK", "application/json")]


def test_header_capture_from_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTel's header capture variables give the same attributes."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-request-id")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    captured = []
    for wrap in (theirs, ours):
        telemetry.reset()
        call(wrap(telemetry), "/items/7", x_request_id="r-1")
        span_attributes = telemetry.server_span().attributes or {}
        captured.append({k: v for k, v in span_attributes.items() if ".header." in k})
    assert (
        captured[0]
        == captured[1]
        == {
            "http.request.header.x_request_id": ("r-1",),
            "http.response.header.content_type": ("application/json",),
        }
    )


@pytest.mark.parametrize(
    "source", ["setting", "OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"]
)
def test_excluded_urls(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """SPAN_PROFILES["excluded_urls"], or the variables OTel's Django instrumentation reads."""
    options: dict[str, Any] = {}
    if source == "setting":
        options["excluded_urls"] = "items/7"
    else:
        monkeypatch.setenv(source, "items/7")
    handler = ours(telemetry, **options)
    assert call(handler, "/items/7").status == "200 OK"
    assert telemetry.spans() == []
    call(handler, "/items/8")
    assert len(telemetry.server_spans()) == 1


def test_suppression_is_honoured(telemetry: Telemetry) -> None:
    """Inside suppress_http_instrumentation() the request is not traced."""
    handler = ours(telemetry)
    with suppress_http_instrumentation():
        call(handler, "/items/7")
    assert telemetry.spans() == []


def test_exception_and_traceresponse(telemetry: Telemetry, trace_response: None) -> None:
    """A failing view: one exception event; every response carries one traceresponse."""
    handler = ours(telemetry)
    response = call(handler, "/boom")
    assert response.status.startswith("500")
    span = telemetry.server_span()
    assert len(exception_events(span)) == 1
    assert len(header_values(response.headers, "traceresponse")) == 1


def test_otel_middleware_outside_gives_one_span(telemetry: Telemetry, trace_response: None) -> None:
    """OTel's WSGI middleware around a Django project using ours: one span, one set of metrics."""
    with override_settings(SPAN_PROFILES={"tracer_provider": telemetry.tracer_provider}):
        handler = WSGIHandler()
    wrapped = OpenTelemetryMiddleware(
        handler,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    response = call(wrapped, "/items/7")
    span = telemetry.server_span()
    assert telemetry.spans() == [span]
    assert span.name == "GET items/<int:pk>"
    assert len(header_values(response.headers, "traceresponse")) == 0
    assert sum(telemetry.points()["http.server.duration"].values()) == 1


def test_bad_option_fails_middleware_construction() -> None:
    """A bad OTel option in SPAN_PROFILES raises SettingsError naming it."""
    with (
        override_settings(SPAN_PROFILES={"response_hook": "nope"}),
        pytest.raises(SettingsError, match="response_hook"),
    ):
        WSGIHandler()


@pytest.mark.anyio
async def test_options_reach_the_middleware_under_asgi(telemetry: Telemetry) -> None:
    """Under Django's ASGI handler too: metrics, the request hook with META, exclusion."""
    from django.test import AsyncClient

    seen: list[str] = []
    config = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "request_hook": lambda span, environ: seen.append(environ["PATH_INFO"]),
        "excluded_urls": "async-items/8",
    }
    with override_settings(SPAN_PROFILES=config):
        client = AsyncClient()
        assert (await client.get("/async-items/7")).status_code == 200
        assert (await client.get("/async-items/8")).status_code == 200
    span = telemetry.server_span()
    assert span.name == "GET async-items/<int:pk>"
    assert seen == ["/async-items/7"]
    durations = telemetry.points()["http.server.duration"]
    assert sum(durations.values()) == 1
    ((key, _),) = durations.items()
    assert dict(key)["http.status_code"] == 200
