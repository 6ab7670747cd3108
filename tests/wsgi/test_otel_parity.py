"""Ours against OTel's WSGI middleware, feature by feature, on the same WSGI app.

As for ASGI: the same requests through ``opentelemetry.instrumentation.wsgi``'s
``OpenTelemetryMiddleware`` ("theirs") and ``SpanProfilesWSGIMiddleware`` ("ours"), on the same
providers. OTel's WSGI middleware has no excluded URLs, no suppression check and sends no
``traceresponse`` (its Flask and Django instrumentations add those); ours does all three, so
those tests check ours alone, and that stacking the two still gives one span and one header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.wsgi")

from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import StatusCode

from span_profiles import SettingsError
from span_profiles.wsgi import SpanProfilesWSGIMiddleware
from tests.support.otel_parity import (
    SEMCONV_MODES,
    Telemetry,
    attributes,
    exception_events,
    header_values,
    same_keys,
    set_semconv_mode,
    telemetry,
    trace_response,
)
from tests.support.wsgi_client import Environ, call

__all__ = ["telemetry", "trace_response"]  # fixtures

Wrap = Callable[..., Any]


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A plain WSGI app: an item with custom headers, a failure, a health check, a stream."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/stream":
        return _stream(start_response)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Custom", "answer"), ("Set-Cookie", "s=1")],
    )
    return [b"item"]


def _stream(start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"a"
    raise RuntimeError("mid-stream")


def theirs(t: Telemetry, wrapped: Any = app, **options: Any) -> Any:
    """OTel's WSGI middleware on the test providers."""
    return OpenTelemetryMiddleware(
        wrapped, tracer_provider=t.tracer_provider, meter_provider=t.meter_provider, **options
    )


def ours(t: Telemetry, wrapped: Any = app, **options: Any) -> Any:
    """Ours on the same providers, with the same OTel options."""
    return SpanProfilesWSGIMiddleware(
        wrapped, tracer_provider=t.tracer_provider, meter_provider=t.meter_provider, **options
    )


BOTH = [pytest.param(theirs, id="theirs"), pytest.param(ours, id="ours")]


# --- spans and attributes --------------------------------------------------------------------


@pytest.mark.parametrize("opt_in", SEMCONV_MODES)
def test_server_span_attributes_match(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, opt_in: str | None
) -> None:
    """Same attributes, kind and status in every semconv mode; ours is named by method alone."""
    set_semconv_mode(monkeypatch, opt_in)
    call(theirs(telemetry))
    their_span = telemetry.server_span()
    assert telemetry.spans() == [their_span]
    telemetry.reset()
    call(ours(telemetry))
    our_span = telemetry.server_span()
    assert telemetry.spans() == [our_span]
    same_keys(attributes(our_span), attributes(their_span))
    assert our_span.status.status_code is their_span.status.status_code
    # The raw path never names ours: a framework adapter renames it after routing.
    assert (their_span.name, our_span.name) == ("GET /items/42", "GET")


@pytest.mark.parametrize("opt_in", SEMCONV_MODES)
def test_exception_is_recorded_once(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, opt_in: str | None
) -> None:
    """A failing app: one exception event, ERROR, and error.type with the stable conventions."""
    set_semconv_mode(monkeypatch, opt_in)
    for wrap in (theirs, ours):
        telemetry.reset()
        with pytest.raises(RuntimeError):
            call(wrap(telemetry), "/boom")
        span = telemetry.server_span()
        assert len(exception_events(span)) == 1, wrap.__name__
        assert span.status.status_code is StatusCode.ERROR
        error_type = (span.attributes or {}).get("error.type")
        assert error_type == (None if opt_in is None else "RuntimeError"), wrap.__name__


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_in", SEMCONV_MODES)
def test_metrics_match(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, opt_in: str | None
) -> None:
    """The same instruments, attributes and counts (ours also times the body)."""
    set_semconv_mode(monkeypatch, opt_in)
    their_app = theirs(telemetry)
    call(their_app)
    call(their_app, method="POST")
    their_points = telemetry.points()

    fresh = telemetry.with_fresh_meter()
    our_app = ours(fresh)
    call(our_app)
    call(our_app, method="POST")
    durations = {None: {"http.server.duration"}, "http": {"http.server.request.duration"}}
    names = durations.get(opt_in) or durations[None] | durations["http"]
    assert set(their_points) == names | {"http.server.active_requests"}
    assert fresh.points() == their_points
    fresh.meter_provider.shutdown()


def test_active_requests_count_the_body_too(telemetry: Telemetry) -> None:
    """Ours counts a request as active until its body is closed."""
    seen: list[float] = []

    def streaming(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        seen.append(sum(telemetry.points()["http.server.active_requests"].values()))
        yield b"x"

    call(ours(telemetry, streaming))
    assert seen == [1]
    assert sum(telemetry.points()["http.server.active_requests"].values()) == 0


# --- header capture ----------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", BOTH)
def test_header_capture_from_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, wrap: Wrap
) -> None:
    """OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* capture and redact the same headers."""
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Request-Id,x-sess.*"
    )
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "x-custom,set-cookie"
    )
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", ".*session.*,set-cookie"
    )
    call(wrap(telemetry), x_request_id="r-1", x_session="secret")
    span_attributes = telemetry.server_span().attributes or {}
    captured = {k: v for k, v in span_attributes.items() if ".header." in k}
    assert captured == {
        "http.request.header.x_request_id": ("r-1",),
        "http.request.header.x_session": ("[REDACTED]",),
        "http.response.header.x_custom": ("answer",),
        "http.response.header.set_cookie": ("[REDACTED]",),
    }


# --- hooks -------------------------------------------------------------------------------------


def test_hooks_are_called_alike(telemetry: Telemetry) -> None:
    """request_hook and response_hook get the same arguments from both."""
    calls: dict[str, list[Any]] = {}

    def hooks(who: str) -> dict[str, Any]:
        log = calls.setdefault(who, [])

        def request_hook(span: Any, environ: Environ) -> None:
            log.append(("request", span.is_recording(), environ["PATH_INFO"]))
            span.set_attribute("from.request_hook", True)

        def response_hook(span: Any, environ: Environ, status: str, headers: Any) -> None:
            log.append(("response", environ["PATH_INFO"], status, dict(headers)["X-Custom"]))

        return {"request_hook": request_hook, "response_hook": response_hook}

    call(theirs(telemetry, **hooks("theirs")))
    their_span = telemetry.server_span()
    telemetry.reset()
    call(ours(telemetry, **hooks("ours")))
    our_span = telemetry.server_span()
    assert calls["ours"] == calls["theirs"]
    assert calls["ours"] == [
        ("request", True, "/items/42"),
        ("response", "/items/42", "200 OK", "answer"),
    ]
    assert (their_span.attributes or {})["from.request_hook"] is True
    assert (our_span.attributes or {})["from.request_hook"] is True


# --- what OTel's WSGI middleware leaves to its instrumentations ---------------------------------


@pytest.mark.parametrize(
    "source", ["keyword", "OTEL_PYTHON_EXCLUDED_URLS", "OTEL_PYTHON_WSGI_EXCLUDED_URLS"]
)
def test_excluded_urls(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """An excluded URL passes through untraced, unmeasured; the keyword or OTel's variables."""
    options: dict[str, Any] = {}
    if source == "keyword":
        options["excluded_urls"] = "healthz"
    else:
        monkeypatch.setenv(source, "healthz")
    wsgi_app = ours(telemetry, **options)
    assert call(wsgi_app, "/healthz").status == "200 OK"
    assert telemetry.spans() == []
    assert "http.server.duration" not in telemetry.points()
    call(wsgi_app)
    assert len(telemetry.server_spans()) == 1


def test_suppress_http_instrumentation(telemetry: Telemetry) -> None:
    """Inside suppress_http_instrumentation() ours passes the request through."""
    with suppress_http_instrumentation():
        assert call(ours(telemetry)).status == "200 OK"
    assert telemetry.spans() == []


def test_traceresponse_once(telemetry: Telemetry, trace_response: None) -> None:
    """Ours sends one traceresponse naming its span."""
    response = call(ours(telemetry))
    span = telemetry.server_span()
    context = span.context
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert header_values(response.headers, "traceresponse") == [expected]


# --- stacked with OTel's middleware ------------------------------------------------------------


def otel_outside(t: Telemetry, **options: Any) -> Any:
    """OTel's middleware outside ours."""
    return theirs(t, SpanProfilesWSGIMiddleware(app, tracer_provider=t.tracer_provider), **options)


def ours_outside(t: Telemetry, **options: Any) -> Any:
    """Ours right outside OTel's."""
    return SpanProfilesWSGIMiddleware(theirs(t, **options), tracer_provider=t.tracer_provider)


STACKS = [
    pytest.param(otel_outside, id="otel-outside"),
    pytest.param(ours_outside, id="ours-outside"),
]


@pytest.mark.parametrize("stack", STACKS)
def test_stacked_gives_one_span(telemetry: Telemetry, trace_response: None, stack: Wrap) -> None:
    """Either order: one span, at most one traceresponse, one set of metrics."""
    response = call(stack(telemetry))
    span = telemetry.server_span()
    assert telemetry.spans() == [span]
    assert len(header_values(response.headers, "traceresponse")) <= 1
    assert sum(telemetry.points()["http.server.duration"].values()) == 1


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("path", ["/boom", "/stream"])
def test_stacked_records_an_exception_once(telemetry: Telemetry, stack: Wrap, path: str) -> None:
    """Either order, raised by the app or while streaming: one exception event."""
    with pytest.raises(RuntimeError):
        call(stack(telemetry), path)
    assert len(exception_events(telemetry.server_span())) == 1


def test_ours_outside_keeps_the_wrapped_hooks(telemetry: Telemetry) -> None:
    """Taking OTel's place, ours keeps its hooks and meter."""
    seen: list[str] = []
    call(ours_outside(telemetry, request_hook=lambda span, environ: seen.append("hook")))
    assert seen == ["hook"]
    assert sum(telemetry.points()["http.server.duration"].values()) == 1


@pytest.mark.parametrize("stack", STACKS)
def test_stacked_honours_suppression_and_exclusion(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, stack: Wrap
) -> None:
    """Suppressed or excluded: untraced in either order... as far as OTel's middleware allows.

    OTel's WSGI middleware checks neither, so with it outside there is its span (and ours
    adopts it); with ours outside, nothing.
    """
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    wsgi_app = stack(telemetry)
    call(wsgi_app, "/healthz")
    with suppress_http_instrumentation():
        call(wsgi_app)
    expected = 2 if stack is otel_outside else 0
    assert len(telemetry.server_spans()) == expected


# --- options -----------------------------------------------------------------------------------


def test_every_otel_keyword_is_accepted(telemetry: Telemetry) -> None:
    """Each of OTel's keyword arguments (and excluded_urls) is taken."""
    import inspect

    values: dict[str, Any] = {
        "request_hook": lambda span, environ: None,
        "response_hook": lambda span, environ, status, headers: None,
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    names = list(inspect.signature(OpenTelemetryMiddleware).parameters)[1:]
    assert sorted(names) == sorted(values), "OTel's middleware has new options: add them here"
    SpanProfilesWSGIMiddleware(app, excluded_urls="x", **values)
    from span_profiles._adapter import ADAPTER_OPTIONS

    assert set(names) <= set(ADAPTER_OPTIONS), "the adapters must list every OTel option"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"request_hook": 1}, "request_hook"),
        ({"server_request_hook": print}, "server_request_hook"),
    ],
)
def test_bad_options_raise_settings_error(options: dict[str, Any], named: str) -> None:
    """A bad OTel option, or an ASGI-only one, is refused at construction, naming it."""
    with pytest.raises(SettingsError, match=named):
        SpanProfilesWSGIMiddleware(app, **options)


def test_failing_request_hook_fails_the_request_and_ends_the_span(telemetry: Telemetry) -> None:
    """As with OTel's WSGI middleware, a raising request_hook fails the request; ours ends its span."""

    def hook(span: Any, environ: Environ) -> None:
        raise ValueError("hook broke")

    for wrap in (theirs, ours):
        with pytest.raises(ValueError, match="hook broke"):
            call(wrap(telemetry, request_hook=hook))
    spans = telemetry.server_spans()
    assert len(spans) == 1, "theirs leaves its span open; ours ends it"
    assert [e.attributes["exception.type"] for e in exception_events(spans[0])] == ["ValueError"]
