"""SpanProfilesWSGIMiddleware: the span and labels cover the app call and the whole body."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.wsgi")

from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import SpanKind, StatusCode

from span_profiles import PROFILE_ID_ATTRIBUTE, SettingsError
from span_profiles._core import sampler_gate
from span_profiles.wsgi import SpanProfilesWSGIMiddleware
from tests.support.asgi import Probe, hex_id, only_span
from tests.support.checkpoints import GateCalls


def environ(path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    """A minimal PEP 3333 environ."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    env.update(extra)
    return env


class StartResponse:
    """Records the status and headers an app starts its response with."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        self.headers = headers
        return lambda data: None


def streaming_app(probe: Probe, chunks: int = 3) -> Callable[..., Any]:
    """An app probing labels in its call and in each chunk of a generator body."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        probe("app call")
        start_response("200 OK", [("content-type", "text/plain")])

        def body() -> Iterator[bytes]:
            for i in range(chunks):
                probe(f"chunk {i}")
                yield b"x"

        return body()

    return app


def test_labels_cover_the_call_and_every_chunk(instrumented: Any) -> None:
    """The app call and each chunk carry the labels; the span ends only at close()."""
    probe = Probe(instrumented.sink)
    wrapped = SpanProfilesWSGIMiddleware(
        streaming_app(probe), tracer_provider=instrumented.provider
    )
    start = StartResponse()
    result = wrapped(environ("/items/1"), start)
    assert instrumented.sink.current() == {}
    assert b"".join(result) == b"xxx"
    assert instrumented.exporter.get_finished_spans() == ()
    result.close()  # type: ignore[attr-defined]
    span = only_span(instrumented.exporter)
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET"
    assert span.attributes is not None
    assert span.attributes[PROFILE_ID_ATTRIBUTE] == hex_id(span)
    assert (
        span.attributes.get("http.status_code", span.attributes.get("http.response.status_code"))
        == 200
    )
    probe.assert_all(span, "GET", count=4)
    assert instrumented.sink.current() == {}


def test_body_iterated_on_another_thread_is_labelled_there(instrumented: Any) -> None:
    """A server thread that iterates and closes the body shows the request's labels then only."""
    probe = Probe(instrumented.sink)
    wrapped = SpanProfilesWSGIMiddleware(
        streaming_app(probe), tracer_provider=instrumented.provider
    )
    result = wrapped(environ(), StartResponse())
    after: list[dict[str, str]] = []

    def server_thread() -> None:
        for _ in result:
            pass
        result.close()  # type: ignore[attr-defined]
        after.append(instrumented.sink.current())

    thread = threading.Thread(target=server_thread)
    thread.start()
    thread.join()
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET", count=4)
    assert {s.thread for s in probe.seen[1:]} == {thread.ident}
    assert after == [{}]


def test_exception_in_app_is_recorded_and_reraised(instrumented: Any) -> None:
    """An exception from the app call is recorded, re-raised, and ends the span."""

    def app(environ: Any, start_response: Any) -> Any:
        raise ValueError("bad")

    wrapped = SpanProfilesWSGIMiddleware(app, tracer_provider=instrumented.provider)
    with pytest.raises(ValueError, match="bad"):
        wrapped(environ(), StartResponse())
    span = only_span(instrumented.exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert instrumented.sink.current() == {}


def test_exception_while_iterating_is_recorded(instrumented: Any) -> None:
    """An exception raised by the body generator is recorded; close() still ends the span."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            yield b"a"
            raise OSError("disk")

        return body()

    wrapped = SpanProfilesWSGIMiddleware(app, tracer_provider=instrumented.provider)
    result = wrapped(environ(), StartResponse())
    with pytest.raises(OSError, match="disk"):
        list(result)
    result.close()  # type: ignore[attr-defined]
    span = only_span(instrumented.exporter)
    assert span.status.status_code is StatusCode.ERROR


def test_file_wrapper_is_returned_unwrapped_and_close_ends_the_span(instrumented: Any) -> None:
    """A wsgi.file_wrapper response stays the server's own object; its close ends the span."""
    closed: list[dict[str, str]] = []

    class FileWrapper:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Iterator[bytes]:
            yield self.data

        def close(self) -> None:
            closed.append(instrumented.sink.current())

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](b"file")

    wrapped = SpanProfilesWSGIMiddleware(app, tracer_provider=instrumented.provider)
    result = wrapped({**environ(), "wsgi.file_wrapper": FileWrapper}, StartResponse())
    assert isinstance(result, FileWrapper)
    assert instrumented.exporter.get_finished_spans() == ()
    result.close()
    span = only_span(instrumented.exporter)
    assert closed == [{"span_id": hex_id(span), "span_name": "GET"}]


def test_remote_parent_is_honoured(instrumented: Any) -> None:
    """An incoming traceparent header becomes the span's remote parent."""
    probe = Probe(instrumented.sink)
    wrapped = SpanProfilesWSGIMiddleware(
        streaming_app(probe), tracer_provider=instrumented.provider
    )
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    env = environ(HTTP_TRACEPARENT=f"00-{trace_id}-b7ad6b7169203331-01")
    result = wrapped(env, StartResponse())
    list(result)
    result.close()  # type: ignore[attr-defined]
    span = only_span(instrumented.exporter)
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert span.parent.is_remote
    probe.assert_all(span, "GET", count=4)


def test_middleware_twice_gives_one_span(instrumented: Any) -> None:
    """Wrapping twice gives one span; the inner middleware passes through."""
    probe = Probe(instrumented.sink)
    inner = SpanProfilesWSGIMiddleware(streaming_app(probe), tracer_provider=instrumented.provider)
    outer = SpanProfilesWSGIMiddleware(inner, tracer_provider=instrumented.provider)
    result = outer(environ(), StartResponse())
    list(result)
    result.close()  # type: ignore[attr-defined]
    probe.assert_all(only_span(instrumented.exporter), "GET", count=4)


def test_otel_middleware_outside_is_adopted(instrumented: Any) -> None:
    """Under OTel's WSGI middleware its span is reused and loses the raw path from its name."""
    probe = Probe(instrumented.sink)
    ours = SpanProfilesWSGIMiddleware(streaming_app(probe), tracer_provider=instrumented.provider)
    app = OpenTelemetryMiddleware(ours, tracer_provider=instrumented.provider)
    result = app(environ("/items/123"), StartResponse())
    list(result)
    result.close()
    span = only_span(instrumented.exporter)
    assert span.name == "GET"
    probe.assert_all(span, "GET", count=4)


def test_disabled_passes_through(instrumented: Any) -> None:
    """enabled=False returns the app's own iterable and starts no span."""
    probe = Probe(instrumented.sink)
    app = streaming_app(probe)
    wrapped = SpanProfilesWSGIMiddleware(app, tracer_provider=instrumented.provider, enabled=False)
    assert list(wrapped(environ(), StartResponse())) == [b"x"] * 3
    assert instrumented.exporter.get_finished_spans() == ()


def test_invalid_setting_fails_at_construction() -> None:
    """A bad option raises SettingsError naming it."""
    with pytest.raises(SettingsError, match="trace_id"):
        SpanProfilesWSGIMiddleware(streaming_app(Probe(None)), trace_id="maybe")  # type: ignore[arg-type]


def test_a_request_thread_waits_for_the_sampler_where_the_request_starts_and_ends(
    instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WSGI runs on the server's worker threads: the request's first labels go on, and its last
    go off, only after a gate wait; body chunks in between switch without one."""
    gate = GateCalls(instrumented.sink)
    monkeypatch.setattr(sampler_gate, "wait", gate)
    wrapped = SpanProfilesWSGIMiddleware(
        streaming_app(Probe(instrumented.sink)), tracer_provider=instrumented.provider
    )
    body = wrapped(environ("/stream"), StartResponse())
    assert b"".join(body) == b"xxx"
    body.close()  # type: ignore[attr-defined]
    history = instrumented.sink.history
    first_add = next(i for i, e in enumerate(history) if e.op == "add")
    last_remove_run = max(
        i for i, e in enumerate(history) if e.op == "remove" and history[i - 1].op == "add"
    )
    waited = {at for _, at in gate.calls}
    assert first_add in waited
    assert last_remove_run in waited
    assert len(gate.calls) == 4  # the app call and the close, each on the way in and out
