"""The Flask extension reaches OTel's options through ``app.config`` and its arguments.

The same Flask app runs behind OTel's WSGI middleware ("theirs", on ``app.wsgi_app``) and behind
``SpanProfiles`` configured through ``app.config["SPAN_PROFILES_<OPTION>"]`` ("ours"); spans,
metrics and hook calls are compared. Ours names the span after the URL rule.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("flask.app")
pytest.importorskip("opentelemetry.instrumentation.wsgi")

from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

import flask
from span_profiles import SettingsError
from span_profiles.flask import SpanProfiles
from tests.support.otel_parity import (
    Telemetry,
    attributes,
    header_values,
    same_keys,
    telemetry,
    trace_response,
    without_route,
)

__all__ = ["telemetry", "trace_response"]  # fixtures


def make_app(**config: Any) -> flask.Flask:
    """An item route with a custom response header, and a health check."""
    app = flask.Flask(__name__)
    app.config.update(config)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return flask.Response("item", headers={"X-Custom": "answer"})

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def theirs(t: Telemetry, **options: Any) -> flask.Flask:
    """OTel's WSGI middleware around the Flask app."""
    app = make_app()
    app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, tracer_provider=t.tracer_provider, meter_provider=t.meter_provider, **options
    )
    return app


def ours(t: Telemetry, **options: Any) -> flask.Flask:
    """Ours, with the same options as ``app.config`` keys."""
    config = {f"SPAN_PROFILES_{name.upper()}": value for name, value in options.items()}
    app = make_app(SPAN_PROFILES_METER_PROVIDER=t.meter_provider, **config)
    SpanProfiles(app, tracer_provider=t.tracer_provider)
    return app


def get(app: flask.Flask, path: str = "/items/42", **headers: str) -> Any:
    """GET ``path`` and close the response, as a server does."""
    response = app.test_client().get(path, headers=headers)
    response.close()
    return response


def test_span_and_metrics_match(telemetry: Telemetry) -> None:
    """Same attributes and metrics (ours adds http.route); ours is named after the URL rule."""
    get(theirs(telemetry))
    their_span = telemetry.server_span()
    their_points = telemetry.points()
    telemetry.reset()
    fresh = telemetry.with_fresh_meter()
    get(ours(fresh))
    our_span = telemetry.server_span()
    same_keys(attributes(our_span), attributes(their_span))
    assert (their_span.name, our_span.name) == ("GET /items/42", "GET /items/<int:item_id>")
    assert without_route(fresh.points()) == their_points
    fresh.meter_provider.shutdown()


def test_hooks_through_app_config(telemetry: Telemetry) -> None:
    """SPAN_PROFILES_REQUEST_HOOK / _RESPONSE_HOOK are called like OTel's hooks."""
    calls: dict[str, list[Any]] = {}

    def hooks(who: str) -> dict[str, Any]:
        log = calls.setdefault(who, [])
        return {
            "request_hook": lambda span, environ: log.append(("request", environ["PATH_INFO"])),
            "response_hook": lambda span, environ, status, headers: log.append(
                ("response", status)
            ),
        }

    get(theirs(telemetry, **hooks("theirs")))
    get(ours(telemetry, **hooks("ours")))
    assert calls["ours"] == calls["theirs"] == [("request", "/items/42"), ("response", "200 OK")]


def test_header_capture_from_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTel's header capture variables give the same attributes."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-request-id")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "x-custom")
    captured = []
    for wrap in (theirs, ours):
        telemetry.reset()
        get(wrap(telemetry), **{"X-Request-Id": "r-1"})
        span_attributes = telemetry.server_span().attributes or {}
        captured.append({k: v for k, v in span_attributes.items() if ".header." in k})
    assert (
        captured[0]
        == captured[1]
        == {
            "http.request.header.x_request_id": ("r-1",),
            "http.response.header.x_custom": ("answer",),
        }
    )


@pytest.mark.parametrize(
    "source", ["config", "OTEL_PYTHON_FLASK_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"]
)
def test_excluded_urls(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """SPAN_PROFILES_EXCLUDED_URLS, or the variables OTel's Flask instrumentation reads."""
    options: dict[str, Any] = {}
    if source == "config":
        options["excluded_urls"] = "healthz"
    else:
        monkeypatch.setenv(source, "healthz")
    app = ours(telemetry, **options)
    assert get(app, "/healthz").status_code == 200
    assert telemetry.spans() == []
    get(app)
    assert len(telemetry.server_spans()) == 1


def test_argument_beats_app_config(telemetry: Telemetry) -> None:
    """An option given to SpanProfiles wins over the same app.config key."""
    app = make_app(SPAN_PROFILES_EXCLUDED_URLS="healthz")
    SpanProfiles(app, tracer_provider=telemetry.tracer_provider, excluded_urls="items")
    get(app, "/healthz")
    get(app)
    assert [s.name for s in telemetry.server_spans()] == ["GET /healthz"]


def test_traceresponse_once(telemetry: Telemetry, trace_response: None) -> None:
    """One traceresponse header, as OTel's Flask instrumentation sends it."""
    response = get(ours(telemetry))
    assert len(header_values(response.headers.items(), "traceresponse")) == 1


def test_bad_option_in_app_config_fails_init_app() -> None:
    """A bad OTel option in app.config is refused when the extension starts, naming it."""
    app = make_app(SPAN_PROFILES_REQUEST_HOOK="not callable")
    with pytest.raises(SettingsError, match="request_hook"):
        SpanProfiles(app)
