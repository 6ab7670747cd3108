"""Ours against OTel's ASGI middleware, feature by feature, on the same Starlette app.

Every test builds the app twice, once behind ``opentelemetry.instrumentation.asgi``'s
``OpenTelemetryMiddleware`` ("theirs") and once behind ``SpanProfilesMiddleware`` ("ours"), sends
the same requests through both on the same tracer and meter providers, and compares the server
span, the metrics, the response headers and the hook calls. The intentional differences are
asserted as such: ours names the span after the route template (and sets ``http.route``), and
makes no internal ``receive``/``send`` spans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.asgi")
pytest.importorskip("starlette")

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.http import get_excluded_urls
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from span_profiles import SettingsError
from span_profiles.asgi import SpanProfilesMiddleware
from tests.support.asgi_client import get, start_headers, websocket
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
    without_route,
)

__all__ = ["telemetry", "trace_response"]  # fixtures

pytestmark = pytest.mark.anyio

Wrap = Callable[..., Any]


def make_app() -> Starlette:
    """Routes for every feature: a templated route, a failing one and a websocket."""

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("item", headers={"X-Custom": "answer", "Set-Cookie": "s=1"})

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    return Starlette(
        routes=[
            Route("/items/{item_id:int}", item, methods=["GET", "POST"]),
            Route("/boom", boom),
            Route("/healthz", health),
            WebSocketRoute("/ws/{room}", echo),
        ]
    )


def theirs(t: Telemetry, app: Any | None = None, **options: Any) -> Any:
    """OTel's middleware on the test providers."""
    return OpenTelemetryMiddleware(
        app or make_app(),
        tracer_provider=t.tracer_provider,
        meter_provider=t.meter_provider,
        **options,
    )


def ours(t: Telemetry, app: Any | None = None, **options: Any) -> Any:
    """Our middleware on the same providers, given the same OTel options."""
    return SpanProfilesMiddleware(
        app or make_app(),
        tracer_provider=t.tracer_provider,
        meter_provider=t.meter_provider,
        **options,
    )


BOTH = [pytest.param(theirs, id="theirs"), pytest.param(ours, id="ours")]


# --- spans and attributes --------------------------------------------------------------------


@pytest.mark.parametrize("opt_in", SEMCONV_MODES)
async def test_server_span_attributes_match(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, opt_in: str | None
) -> None:
    """Same attributes, kind and status in every semconv mode; ours adds http.route and the name."""
    set_semconv_mode(monkeypatch, opt_in)
    await get(theirs(telemetry))
    their_span = telemetry.server_span()
    their_internal = [s for s in telemetry.spans() if s.kind is SpanKind.INTERNAL]
    telemetry.reset()
    await get(ours(telemetry))
    our_span = telemetry.server_span()

    same_keys(attributes(our_span), attributes(their_span))
    assert our_span.status.status_code is their_span.status.status_code
    assert their_span.name == "GET /items/42"
    assert our_span.name == "GET /items/{item_id}"
    assert (our_span.attributes or {})["http.route"] == "/items/{item_id}"
    # Theirs adds receive/send spans; ours is the one span of the request.
    assert their_internal, "OTel's middleware should have made receive/send spans"
    assert telemetry.spans() == [our_span]


async def test_exception_is_recorded_once_with_the_same_status(telemetry: Telemetry) -> None:
    """A failing endpoint: ERROR status and a 500 in both; ours also keeps the exception event.

    Starlette sends its 500 before re-raising, and OTel's middleware ends the span at the last
    body message, so the exception reaches an ended span there and is lost. Ours keeps the span
    open until the application returns, so the event is recorded, once.
    """
    events = {}
    for wrap in (theirs, ours):
        telemetry.reset()
        with pytest.raises(RuntimeError):
            await get(wrap(telemetry), "/boom")
        span = telemetry.server_span()
        events[wrap.__name__] = len(exception_events(span))
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["http.status_code"] == 500
    assert events == {"theirs": 0, "ours": 1}


async def test_exception_before_the_response_is_recorded_once_in_both(telemetry: Telemetry) -> None:
    """Raised before any response: both record it, once, with the same status description."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("early")

    descriptions = []
    for wrap in (theirs, ours):
        telemetry.reset()
        with pytest.raises(RuntimeError):
            await get(wrap(telemetry, raw))
        span = telemetry.server_span()
        assert len(exception_events(span)) == 1
        descriptions.append(span.status.description)
    assert descriptions == ["RuntimeError: early"] * 2


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_in", SEMCONV_MODES)
async def test_metrics_match(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, opt_in: str | None
) -> None:
    """The same instruments with the same attributes and counts; ours adds http.route."""
    set_semconv_mode(monkeypatch, opt_in)
    headers = [(b"content-length", b"3")]
    their_app = theirs(telemetry)
    await get(their_app, method="POST", headers=headers)
    await get(their_app)
    their_points = telemetry.points()

    fresh = telemetry.with_fresh_meter()
    our_app = ours(fresh)
    await get(our_app, method="POST", headers=headers)
    await get(our_app)
    our_points = fresh.points()

    expected = {
        None: {
            "http.server.duration",
            "http.server.active_requests",
            "http.server.response.size",
            "http.server.request.size",
        },
        "http": {
            "http.server.request.duration",
            "http.server.active_requests",
            "http.server.response.body.size",
            "http.server.request.body.size",
        },
    }
    names = expected.get(opt_in) or expected[None] | expected["http"]
    assert set(their_points) == names
    assert without_route(our_points) == their_points
    if opt_in is not None:
        routes = {dict(key).get("http.route") for key in our_points["http.server.request.duration"]}
        assert routes == {"/items/{item_id}"}
    fresh.meter_provider.shutdown()


async def test_active_requests_go_up_while_the_request_runs(telemetry: Telemetry) -> None:
    """``http.server.active_requests`` is 1 inside the endpoint and 0 after, for ours too."""
    seen: list[float] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        points = telemetry.points()["http.server.active_requests"]
        seen.append(sum(points.values()))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/items/{item_id:int}", endpoint)])
    await get(ours(telemetry, app))
    assert seen == [1]
    assert sum(telemetry.points()["http.server.active_requests"].values()) == 0


# --- header capture ----------------------------------------------------------------------------

REQUEST_HEADERS = [(b"x-request-id", b"r-1"), (b"x-session", b"secret"), (b"accept", b"text/plain")]


@pytest.mark.parametrize("wrap", BOTH)
async def test_header_capture_from_the_environment(
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
    await get(wrap(telemetry), headers=REQUEST_HEADERS)
    captured = {
        k: v for k, v in (telemetry.server_span().attributes or {}).items() if ".header." in k
    }
    assert captured == {
        "http.request.header.x_request_id": ("r-1",),
        "http.request.header.x_session": ("[REDACTED]",),
        "http.response.header.x_custom": ("answer",),
        "http.response.header.set_cookie": ("[REDACTED]",),
    }


@pytest.mark.parametrize("wrap", BOTH)
async def test_header_capture_from_keywords(telemetry: Telemetry, wrap: Wrap) -> None:
    """The http_capture_headers_* keywords do the same as the variables."""
    app = wrap(
        telemetry,
        http_capture_headers_server_request=["accept"],
        http_capture_headers_server_response=["x-custom"],
        http_capture_headers_sanitize_fields=["x-custom"],
    )
    await get(app, headers=REQUEST_HEADERS)
    captured = {
        k: v for k, v in (telemetry.server_span().attributes or {}).items() if ".header." in k
    }
    assert captured == {
        "http.request.header.accept": ("text/plain",),
        "http.response.header.x_custom": ("[REDACTED]",),
    }


# --- excluded URLs and suppression -------------------------------------------------------------


@pytest.mark.parametrize("wrap", BOTH)
async def test_excluded_urls_keyword(telemetry: Telemetry, wrap: Wrap) -> None:
    """An excluded URL gets no span and no metrics; others still do."""
    app = wrap(telemetry, excluded_urls="healthz,/nothing")
    sent = await get(app, "/healthz")
    assert sent[0]["status"] == 200
    assert telemetry.spans() == []
    assert not any(telemetry.points().get("http.server.duration", {}).values())
    await get(app)
    assert telemetry.server_span().attributes


@pytest.mark.parametrize(
    "variable", ["OTEL_PYTHON_EXCLUDED_URLS", "OTEL_PYTHON_ASGI_EXCLUDED_URLS"]
)
async def test_excluded_urls_from_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Ours reads OTel's variables (OTel's bare ASGI middleware leaves them to its instrumentors)."""
    monkeypatch.setenv(variable, "healthz")
    app = ours(telemetry)
    await get(app, "/healthz")
    assert telemetry.spans() == []
    await get(app)
    assert len(telemetry.server_spans()) == 1


async def test_keyword_beats_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in OTel's instrumentors, an explicit excluded_urls replaces the variable."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    app = ours(telemetry, excluded_urls="items")
    await get(app, "/healthz")
    assert len(telemetry.server_spans()) == 1
    telemetry.reset()
    await get(app)
    assert telemetry.spans() == []


@pytest.mark.parametrize("wrap", BOTH)
async def test_suppress_http_instrumentation(telemetry: Telemetry, wrap: Wrap) -> None:
    """Inside suppress_http_instrumentation() the request passes through untraced."""
    app = wrap(telemetry)
    with suppress_http_instrumentation():
        sent = await get(app)
    assert sent[0]["status"] == 200
    assert telemetry.spans() == []


# --- hooks and span details --------------------------------------------------------------------


async def test_hooks_are_called_alike(telemetry: Telemetry) -> None:
    """The three hooks get the same scopes and messages; ours passes the server span to all."""
    calls: dict[str, list[tuple[str, Any]]] = {}

    def recorder(who: str) -> dict[str, Any]:
        log = calls.setdefault(who, [])

        def server_request_hook(span: Any, scope: Any) -> None:
            log.append(("server_request", (span.kind, scope["path"])))
            span.set_attribute("from.server_hook", scope["path"])

        def client_request_hook(span: Any, scope: Any, message: Any) -> None:
            log.append(("client_request", message["type"]))

        def client_response_hook(span: Any, scope: Any, message: Any) -> None:
            log.append(("client_response", message["type"]))
            if span.is_recording():
                span.set_attribute("from.response_hook", message["type"])

        return {
            "server_request_hook": server_request_hook,
            "client_request_hook": client_request_hook,
            "client_response_hook": client_response_hook,
        }

    await get(theirs(telemetry, **recorder("theirs")))
    their_server = telemetry.server_span()
    telemetry.reset()
    await get(ours(telemetry, **recorder("ours")))
    our_server = telemetry.server_span()

    assert calls["ours"] == calls["theirs"]
    assert ("server_request", (SpanKind.SERVER, "/items/42")) in calls["ours"]
    assert their_server.attributes
    assert their_server.attributes["from.server_hook"] == "/items/42"
    assert our_server.attributes
    assert our_server.attributes["from.server_hook"] == "/items/42"
    # Theirs sets the response hook's attribute on its send spans; ours has only the server span.
    assert our_server.attributes["from.response_hook"] == "http.response.body"


@pytest.mark.parametrize("wrap", BOTH)
async def test_failing_hook_is_recorded_not_raised(telemetry: Telemetry, wrap: Wrap) -> None:
    """OTel makes hooks failsafe: the exception lands on the span, the request succeeds."""

    def hook(span: Any, scope: Any) -> None:
        raise ValueError("hook broke")

    sent = await get(wrap(telemetry, server_request_hook=hook))
    assert sent[0]["status"] == 200
    events = exception_events(telemetry.server_span())
    assert [e.attributes["exception.type"] for e in events] == ["ValueError"]


@pytest.mark.parametrize("wrap", BOTH)
async def test_default_span_details_names_the_span(telemetry: Telemetry, wrap: Wrap) -> None:
    """A default_span_details callback gives the name (routing keeps it) and extra attributes."""

    def details(scope: Any) -> tuple[str, dict[str, Any]]:
        return f"custom {scope['method']}", {"from.details": "yes"}

    await get(wrap(telemetry, default_span_details=details))
    span = telemetry.server_span()
    assert span.name == "custom GET"
    assert span.attributes
    assert span.attributes["from.details"] == "yes"


# --- websockets and traceresponse --------------------------------------------------------------


@pytest.mark.parametrize("wrap", BOTH)
async def test_websocket_status_and_traceresponse(
    telemetry: Telemetry, trace_response: None, wrap: Wrap
) -> None:
    """A websocket server span gets the status attribute; its accept carries traceresponse."""
    sent = await websocket(wrap(telemetry))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    span = telemetry.server_span()
    assert (span.attributes or {})["http.status_code"] == 200
    values = header_values(start_headers(sent), "traceresponse")
    assert values == [
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    ]


@pytest.mark.parametrize("wrap", BOTH)
async def test_http_traceresponse_once(
    telemetry: Telemetry, trace_response: None, wrap: Wrap
) -> None:
    """One traceresponse header naming the server span."""
    sent = await get(wrap(telemetry))
    span = telemetry.server_span()
    values = header_values(start_headers(sent), "traceresponse")
    assert values == [
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    ]


# --- stacked with OTel's middleware ------------------------------------------------------------


def stacked_otel_outside(t: Telemetry, **options: Any) -> Any:
    """OTel's middleware outside ours."""
    return theirs(
        t, SpanProfilesMiddleware(make_app(), tracer_provider=t.tracer_provider), **options
    )


def stacked_ours_outside(t: Telemetry, **options: Any) -> Any:
    """Ours outside OTel's middleware (as ``add_middleware`` twice builds it)."""
    return SpanProfilesMiddleware(theirs(t, **options), tracer_provider=t.tracer_provider)


STACKS = [
    pytest.param(stacked_otel_outside, id="otel-outside"),
    pytest.param(stacked_ours_outside, id="ours-outside"),
]


@pytest.mark.parametrize("stack", STACKS)
async def test_stacked_gives_one_server_span_and_one_header(
    telemetry: Telemetry, trace_response: None, stack: Wrap
) -> None:
    """Either order: one SERVER span, route-named, one traceresponse, one set of metrics."""
    sent = await get(stack(telemetry, exclude_spans=["receive", "send"]))
    span = telemetry.server_span()
    assert telemetry.spans() == [span]
    assert span.name == "GET /items/{item_id}"
    assert len(header_values(start_headers(sent), "traceresponse")) == 1
    durations = telemetry.points()["http.server.duration"]
    assert sum(durations.values()) == 1


@pytest.mark.parametrize("stack", STACKS)
async def test_stacked_records_an_exception_once(telemetry: Telemetry, stack: Wrap) -> None:
    """Either order: the exception event is on the server span at most once.

    With OTel's middleware outside, the span is OTel's: it records the exception if the span is
    still open (not here: Starlette sent its 500 first, see above). With ours outside, once.
    """
    with pytest.raises(RuntimeError):
        await get(stack(telemetry), "/boom")
    expected = 1 if stack is stacked_ours_outside else 0
    assert len(exception_events(telemetry.server_span())) == expected


async def test_stacked_early_exception_is_recorded_once(telemetry: Telemetry) -> None:
    """OTel's middleware outside ours, raised before the response: OTel records it, ours not."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("early")

    app = theirs(telemetry, SpanProfilesMiddleware(raw, tracer_provider=telemetry.tracer_provider))
    with pytest.raises(RuntimeError):
        await get(app)
    assert len(exception_events(telemetry.server_span())) == 1


@pytest.mark.parametrize("stack", STACKS)
async def test_stacked_honours_exclusion_and_suppression(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, stack: Wrap
) -> None:
    """Excluded (through OTel's variable) and suppressed requests stay untraced in either order."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    app = stack(telemetry, excluded_urls=get_excluded_urls("ASGI"))
    await get(app, "/healthz")
    with suppress_http_instrumentation():
        await get(app)
    assert telemetry.spans() == []
    await get(app)
    assert len(telemetry.server_spans()) == 1


async def test_ours_outside_takes_the_wrapped_exclusion(telemetry: Telemetry) -> None:
    """Ours right outside OTel's middleware honours the excluded_urls given to OTel's."""
    app = stacked_ours_outside(telemetry, excluded_urls="healthz")
    await get(app, "/healthz")
    assert telemetry.spans() == []


async def test_ours_outside_uses_the_wrapped_middlewares_options(telemetry: Telemetry) -> None:
    """Taking OTel's place, ours keeps its hooks and meter."""
    seen: list[str] = []
    app = stacked_ours_outside(
        telemetry, server_request_hook=lambda span, scope: seen.append(scope["path"])
    )
    await get(app)
    assert seen == ["/items/42"]
    assert telemetry.server_span().name == "GET /items/{item_id}"
    assert sum(telemetry.points()["http.server.duration"].values()) == 1


# --- options -----------------------------------------------------------------------------------


def test_every_otel_keyword_is_accepted(telemetry: Telemetry) -> None:
    """Each of OTel's keyword arguments is taken, not refused as an unknown setting."""
    import inspect

    from opentelemetry import metrics, trace

    values: dict[str, Any] = {
        "excluded_urls": "healthz",
        "default_span_details": lambda scope: ("x", {}),
        "server_request_hook": lambda span, scope: None,
        "client_request_hook": lambda span, scope, message: None,
        "client_response_hook": lambda span, scope, message: None,
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "tracer": trace.get_tracer("t", tracer_provider=telemetry.tracer_provider),
        "meter": metrics.get_meter("m", meter_provider=telemetry.meter_provider),
        "http_capture_headers_server_request": ["a"],
        "http_capture_headers_server_response": ["b"],
        "http_capture_headers_sanitize_fields": ["c"],
        "exclude_spans": ["receive", "send"],
    }
    names = list(inspect.signature(OpenTelemetryMiddleware).parameters)[1:]
    assert sorted(names) == sorted(values), "OTel's middleware has new options: add them here"
    SpanProfilesMiddleware(make_app(), **values)
    from span_profiles._adapter import ADAPTER_OPTIONS

    assert set(names) <= set(ADAPTER_OPTIONS), "the adapters must list every OTel option"


async def test_tracer_and_meter_keywords_are_used(telemetry: Telemetry) -> None:
    """``tracer`` and ``meter`` replace the providers' defaults, as in OTel."""
    from opentelemetry import metrics, trace

    tracer = trace.get_tracer("custom-tracer", tracer_provider=telemetry.tracer_provider)
    meter = metrics.get_meter("custom-meter", meter_provider=telemetry.meter_provider)
    await get(SpanProfilesMiddleware(make_app(), tracer=tracer, meter=meter))
    span = telemetry.server_span()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "custom-tracer"
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    scopes = {s.scope.name for r in data.resource_metrics for s in r.scope_metrics}
    assert scopes == {"custom-meter"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"server_request_hook": "not callable"}, "server_request_hook"),
        ({"exclude_spans": ["everything"]}, "exclude_spans"),
        ({"http_capture_headers_server_request": 3}, "http_capture_headers_server_request"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_otel_options_raise_settings_error(options: dict[str, Any], named: str) -> None:
    """A wrong OTel option, or an unknown name, is refused at construction, naming it."""
    with pytest.raises(SettingsError, match=named):
        SpanProfilesMiddleware(make_app(), **options)
