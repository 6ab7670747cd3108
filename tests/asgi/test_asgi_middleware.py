"""SpanProfilesMiddleware on a plain Starlette app, driven in the test's own event loop."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.instrumentation.asgi")
httpx = pytest.importorskip("httpx")
starlette = pytest.importorskip("starlette")

from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

import span_profiles  # noqa: E402
from span_profiles import PROFILE_ID_ATTRIBUTE, SettingsError  # noqa: E402
from span_profiles._core import sampler_gate  # noqa: E402
from span_profiles.asgi import SpanProfilesMiddleware  # noqa: E402
from tests.support.asgi import Probe, hex_id, only_span, server_spans  # noqa: E402
from tests.support.checkpoints import GateCalls  # noqa: E402

pytestmark = pytest.mark.anyio

ITEM = "GET /items/{item_id}"


def make_app(probe: Probe, *, middleware: list[Middleware] | None = None) -> Starlette:
    """A small app whose handlers call ``probe`` at checkpoints around awaits and threads."""

    async def item(request: Request) -> JSONResponse:
        probe("async start")
        await anyio.sleep(0)
        probe("after sleep(0)")
        await anyio.sleep(0.001)
        probe("after sleep(0.001)")
        return JSONResponse({"item_id": request.path_params["item_id"]})

    def sync_item(request: Request) -> PlainTextResponse:
        probe("sync endpoint thread")
        return PlainTextResponse(str(threading.get_ident()))

    async def background(request: Request) -> PlainTextResponse:
        async def later() -> None:
            await anyio.sleep(0.001)
            probe("background task")

        return PlainTextResponse("ok", background=BackgroundTask(later))

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await anyio.sleep(0)
                probe(f"chunk {i}")
                yield b"x"

        return StreamingResponse(chunks())

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    async def inner(request: Request) -> PlainTextResponse:
        probe("mounted")
        return PlainTextResponse("ok")

    routes = [
        Route("/items/{item_id:int}", item),
        Route("/sync/{item_id}", sync_item),
        Route("/background", background),
        Route("/stream", stream),
        Route("/boom", boom),
        Mount("/api", routes=[Route("/things/{thing_id}", inner)]),
    ]
    return Starlette(routes=routes, middleware=middleware or [])


def client(app: Any, *, raise_app_exceptions: bool = True) -> Any:
    """An httpx client calling ``app`` in the test's own event loop."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def with_ours(instrumented: Any, **options: Any) -> list[Middleware]:
    """Our middleware, with the test's provider."""
    return [Middleware(SpanProfilesMiddleware, tracer_provider=instrumented.provider, **options)]


async def test_async_endpoint_labels_follow_the_request_across_awaits(instrumented: Any) -> None:
    """An async endpoint shows its request span and route template after every await."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        response = await http.get("/items/42")
    assert response.status_code == 200
    span = only_span(instrumented.exporter)
    assert span.name == ITEM
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert span.attributes[PROFILE_ID_ATTRIBUTE] == hex_id(span)
    probe.assert_all(span, ITEM, count=3)
    assert instrumented.sink.current() == {}


async def test_sync_endpoint_is_labelled_in_its_worker_thread(instrumented: Any) -> None:
    """A sync endpoint, run by Starlette in a worker thread, carries the request's labels."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        response = await http.get("/sync/7")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /sync/{item_id}", count=1)
    assert int(response.text) != threading.get_ident()
    assert instrumented.sink.current(int(response.text)) == {}


async def test_only_worker_threads_wait_for_the_sampler(
    instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop thread sits next to the sampler and never waits; the sync endpoint's thread does,
    before each of its label switches."""
    gate = GateCalls(instrumented.sink)
    monkeypatch.setattr(sampler_gate, "wait", gate)
    async with client(
        make_app(Probe(instrumented.sink), middleware=with_ours(instrumented))
    ) as http:
        await http.get("/items/42")
        response = await http.get("/sync/7")
    worker = int(response.text)
    assert gate.threads() == {worker}
    assert gate.unguarded_switches(worker) == []


async def test_background_task_runs_inside_the_request_span(instrumented: Any) -> None:
    """A background task runs after the response but still carries the request's labels."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        await http.get("/background")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /background", count=1)


async def test_streamed_chunks_carry_labels_until_the_last_one(instrumented: Any) -> None:
    """Every chunk of a streaming response is produced under the request's labels."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        response = await http.get("/stream")
    assert response.content == b"xxx"
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /stream", count=3)


async def test_mounted_route_gets_the_full_template(instrumented: Any) -> None:
    """A route inside a Mount is named with the mount prefix and the inner template."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        await http.get("/api/things/9")
    span = only_span(instrumented.exporter)
    assert span.name == "GET /api/things/{thing_id}"
    probe.assert_all(span, "GET /api/things/{thing_id}", count=1)


async def test_unmatched_route_is_named_by_method_only(instrumented: Any) -> None:
    """A 404 is named "GET", never after the raw path."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        response = await http.get("/no/such/path/123")
    assert response.status_code == 404
    span = only_span(instrumented.exporter)
    assert span.name == "GET"
    assert span.attributes is not None
    assert "http.route" not in span.attributes


async def test_remote_parent_is_honoured(instrumented: Any) -> None:
    """An incoming traceparent becomes the span's parent; the span is still a labelled root."""
    probe = Probe(instrumented.sink)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent_id = "b7ad6b7169203331"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        await http.get("/items/1", headers=headers)
    span = only_span(instrumented.exporter)
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == parent_id
    probe.assert_all(span, ITEM, count=3)


async def test_exception_is_recorded_and_reraised(instrumented: Any) -> None:
    """An exception from the app is recorded on the span and propagates unchanged."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    wrapped = SpanProfilesMiddleware(app, tracer_provider=instrumented.provider)
    async with client(wrapped) as http:
        with pytest.raises(RuntimeError, match="boom"):
            await http.get("/boom")
    span = only_span(instrumented.exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


async def test_handler_exception_under_starlette_is_recorded(instrumented: Any) -> None:
    """A handler exception Starlette turns into a 500 (outside us) is recorded on the span."""
    probe = Probe(instrumented.sink)
    app = make_app(probe, middleware=with_ours(instrumented))
    async with client(app, raise_app_exceptions=False) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    span = only_span(instrumented.exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


async def test_response_status_code_is_recorded(instrumented: Any) -> None:
    """The status of the response the app sends becomes the span's status-code attribute."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, middleware=with_ours(instrumented))) as http:
        await http.get("/nothing-here")
    attributes = only_span(instrumented.exporter).attributes
    assert attributes is not None
    assert attributes.get("http.status_code", attributes.get("http.response.status_code")) == 404


async def test_middleware_twice_gives_one_span(instrumented: Any) -> None:
    """Applying the middleware twice still gives exactly one span per request."""
    probe = Probe(instrumented.sink)
    middleware = with_ours(instrumented) + with_ours(instrumented)
    async with client(make_app(probe, middleware=middleware)) as http:
        await http.get("/items/3")
    span = only_span(instrumented.exporter)
    assert span.name == ITEM
    probe.assert_all(span, ITEM, count=3)


async def test_otel_middleware_outside_is_adopted(instrumented: Any) -> None:
    """Under OTel's own ASGI middleware, its server span is reused, renamed and labelled."""
    probe = Probe(instrumented.sink)
    inner = SpanProfilesMiddleware(make_app(probe), tracer_provider=instrumented.provider)
    app = OpenTelemetryMiddleware(
        inner, tracer_provider=instrumented.provider, exclude_spans=["receive", "send"]
    )
    async with client(app) as http:
        await http.get("/items/5")
    spans = server_spans(instrumented.exporter)
    assert len(spans) == 1, [s.name for s in instrumented.exporter.get_finished_spans()]
    assert spans[0].name == ITEM
    probe.assert_all(spans[0], ITEM, count=3)


async def test_an_adopted_span_ended_early_still_labels_the_rest_of_the_request(
    instrumented: Any,
) -> None:
    """An outer owner that ends its span at the last body message (as FastAPI's telemetry
    does): the background work after it still carries the request's labels, and only after
    the request returns are they gone."""
    probe = Probe(instrumented.sink)
    inner = SpanProfilesMiddleware(make_app(probe), tracer_provider=instrumented.provider)
    tracer = instrumented.provider.get_tracer("early-ender")

    async def ends_early(scope: Any, receive: Any, send: Any) -> None:
        span = tracer.start_span("GET", kind=SpanKind.SERVER)

        async def sending(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                span.end()

        with trace.use_span(span, end_on_exit=False):
            await inner(scope, receive, sending)
        probe("after the app returned")

    async with client(ends_early) as http:
        await http.get("/background")
    span = only_span(instrumented.exporter)
    labelled, after = probe.seen
    assert labelled.where == "background task"
    assert labelled.labels == {"span_id": hex_id(span), "span_name": "GET /background"}
    assert after.labels == {}


async def test_concurrent_requests_keep_their_own_labels(instrumented: Any) -> None:
    """Twenty interleaved requests each see only their own span at every checkpoint."""
    seen: dict[str, list[dict[str, str]]] = {}

    async def item(request: Request) -> PlainTextResponse:
        own = format(trace.get_current_span().get_span_context().span_id, "016x")
        for _ in range(5):
            await anyio.sleep(0.001)
            seen.setdefault(own, []).append(instrumented.sink.current())
        return PlainTextResponse(own)

    app = Starlette(routes=[Route("/items/{item_id}", item)], middleware=with_ours(instrumented))
    async with client(app) as http, anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(http.get, f"/items/{i}")
    spans = instrumented.exporter.get_finished_spans()
    assert len(spans) == 20
    for span in spans:
        own = hex_id(span)
        assert seen[own] == [{"span_id": own, "span_name": ITEM}] * 5


async def test_disabled_middleware_passes_through(instrumented: Any) -> None:
    """With enabled=False no span is started and the app still answers."""
    probe = Probe(instrumented.sink)
    app = make_app(probe, middleware=with_ours(instrumented, enabled=False))
    async with client(app) as http:
        response = await http.get("/items/1")
    assert response.status_code == 200
    assert instrumented.exporter.get_finished_spans() == ()
    assert all(s.labels == {} for s in probe.seen)


async def test_websocket_connection_gets_a_span(instrumented: Any) -> None:
    """A websocket connection is one span, named after its route, labelled while it runs."""
    probe = Probe(instrumented.sink)

    async def endpoint(websocket: Any) -> None:
        await websocket.accept()
        probe("websocket")
        await websocket.send_text("hi")
        await websocket.close()

    from starlette.routing import WebSocketRoute

    app = Starlette(
        routes=[WebSocketRoute("/ws/{room}", endpoint)], middleware=with_ours(instrumented)
    )
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws/lobby",
        "raw_path": b"/ws/lobby",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    span = only_span(instrumented.exporter)
    assert span.name == "WEBSOCKET /ws/{room}"
    probe.assert_all(span, "WEBSOCKET /ws/{room}", count=1)


async def test_lifespan_passes_through_and_instruments() -> None:
    """Lifespan events reach the app, and startup installs span-profiles if nobody did."""
    from span_profiles.testing import RecordingSink

    span_profiles.uninstrument()
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                events.append(f"instrumented={span_profiles.is_instrumented()}")
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    try:
        wrapped = SpanProfilesMiddleware(app, sink=RecordingSink())
        await wrapped({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        assert events == ["lifespan.startup", "instrumented=True", "lifespan.shutdown"]
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    finally:
        span_profiles.uninstrument()


def test_invalid_setting_fails_at_construction() -> None:
    """A bad option raises SettingsError naming it when the middleware is built."""
    with pytest.raises(SettingsError, match="scope"):
        SpanProfilesMiddleware(make_app(Probe(None)), scope="everything")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="colour"):
        SpanProfilesMiddleware(make_app(Probe(None)), colour="red")  # type: ignore[arg-type]


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit option beats the environment, which beats the default."""
    monkeypatch.setenv("SPAN_PROFILES_SCOPE", "all")
    app = make_app(Probe(None))  # type: ignore[arg-type]
    assert SpanProfilesMiddleware(app).settings.scope == "all"
    assert SpanProfilesMiddleware(app, scope="root").settings.scope == "root"
    monkeypatch.setenv("SPAN_PROFILES_SCOPE", "bogus")
    with pytest.raises(SettingsError, match="SPAN_PROFILES_SCOPE"):
        SpanProfilesMiddleware(app)
