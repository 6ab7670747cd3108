"""The request span and its scope, shared by every adapter: _request."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.util.http")

from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode

from span_profiles._request import (
    HTTP_ROUTE,
    RequestSpan,
    ScopedBody,
    current_request,
    http_method,
    scoped_async_body,
    start,
)
from tests.support.asgi import hex_id


class _Getter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


def begin(instrumented: Any, route: str | None = None) -> RequestSpan:
    """A request span started by ``start`` as an adapter would, outside any span."""
    request = start(
        instrumented.tracer,
        method="GET",
        carrier=dict[str, str](),
        getter=_Getter(),
        attributes={"http.request.method": "GET"},
        route=route,
    )
    assert request is not None
    return request


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GET", "GET"),
        ("post", "POST"),
        (" PUT ", "PUT"),
        ("BREW", "HTTP"),
        ("", "HTTP"),
        (None, "HTTP"),
    ],
)
def test_http_method_folds_unknown_methods_into_one_name(raw: object, expected: str) -> None:
    """Known methods are kept (upper-cased); anything else is one low-cardinality value."""
    assert http_method(raw) == expected


def test_a_route_found_up_front_names_the_span_from_its_start(instrumented: Any) -> None:
    """With the route given to start(), the span's first name is final and carries http.route."""
    request = begin(instrumented, route="/items/{item_id}")
    with request.activated():
        assert instrumented.sink.current()["span_name"] == "GET /items/{item_id}"
    request.end()
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes[HTTP_ROUTE] == "/items/{item_id}"
    assert span.attributes["http.request.method"] == "GET"


def test_an_adopted_server_span_takes_the_route_found_up_front(instrumented: Any) -> None:
    """An outer SERVER span is renamed to the route at once, not left with its raw-path name."""
    with instrumented.tracer.start_as_current_span("GET /items/7", kind=SpanKind.SERVER) as outer:
        request = start(
            instrumented.tracer,
            method="GET",
            carrier={},
            getter=_Getter(),
            attributes={},
            raw_name="GET /items/7",
            route="/items/{item_id}",
        )
        assert request is not None
        assert not request.owned
        assert request.span is outer
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.name == "GET /items/{item_id}"


def test_activated_makes_the_request_current_and_restores_the_context(instrumented: Any) -> None:
    """Inside the block the request's span and guard are current; after it, what was before."""
    request = begin(instrumented)
    assert current_request() is None
    with request.activated():
        assert current_request() is request
        assert instrumented.sink.current()["span_id"] == hex_id(request.span)
    assert current_request() is None
    assert instrumented.sink.current() == {}
    request.end()


def test_activated_records_an_escaping_exception_and_reraises_it(instrumented: Any) -> None:
    """The exception reaches the caller, and the span carries it as an error."""
    request = begin(instrumented)
    with pytest.raises(KeyError), request.activated(end=True):
        raise KeyError("boom")
    assert current_request() is None
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_the_end_of_an_iteration_is_no_failure(instrumented: Any) -> None:
    """StopIteration leaving the block (a body's last chunk) is not recorded."""
    request = begin(instrumented)
    with pytest.raises(StopIteration), request.activated(end=True):
        next(iter(()))
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_keep_open_defers_the_end_unless_the_block_fails(instrumented: Any) -> None:
    """keep_open() leaves the span for a closer to end; an exception ends it anyway."""
    kept = begin(instrumented)
    with kept.activated(end=True) as active:
        active.keep_open()
    assert instrumented.exporter.get_finished_spans() == ()
    failed = begin(instrumented)

    def fail_after_keep_open() -> None:
        with failed.activated(end=True) as active:
            active.keep_open()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_after_keep_open()
    assert [s.name for s in instrumented.exporter.get_finished_spans()] == ["GET"]
    kept.end()


def test_closing_runs_the_close_in_context_and_ends_the_span_once(instrumented: Any) -> None:
    """A closer replacement sees the request's labels and ends the span, however often called."""
    request = begin(instrumented)
    seen: list[dict[str, str]] = []
    close = request.closing(lambda: seen.append(instrumented.sink.current()))
    close()
    assert seen == [{"span_id": hex_id(request.span), "span_name": "GET"}]
    close()
    assert len(instrumented.exporter.get_finished_spans()) == 1


def test_scoped_body_pulls_each_chunk_in_the_request_context_on_any_thread(
    instrumented: Any,
) -> None:
    """Each next() (here on another thread, as servers may) carries the request's labels only."""
    request = begin(instrumented)
    started: list[bool] = []

    def chunks() -> Iterator[bytes]:
        started.append(True)
        for _ in range(2):
            yield instrumented.sink.current()["span_id"].encode()

    body = ScopedBody(chunks(), request, on_close=request.closing(None))
    assert started == []  # lazy: the generator runs first on next(), in context
    pulled: list[bytes] = []
    worker = threading.Thread(target=lambda: pulled.extend(body))
    worker.start()
    worker.join()
    assert pulled == [hex_id(request.span).encode()] * 2
    assert instrumented.exporter.get_finished_spans() == ()
    body.close()
    assert len(instrumented.exporter.get_finished_spans()) == 1


def test_scoped_body_records_a_failing_chunk(instrumented: Any) -> None:
    """A body that raises mid-way fails the span; the error still reaches the server."""
    request = begin(instrumented)

    def chunks() -> Iterator[bytes]:
        yield b"a"
        raise ValueError("half way")

    body = ScopedBody(chunks(), request, on_close=request.closing(None))
    assert next(body) == b"a"
    with pytest.raises(ValueError, match="half way"):
        next(body)
    body.close()
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.anyio
async def test_scoped_async_body_pulls_each_chunk_in_context(instrumented: Any) -> None:
    """An async body's chunks carry the request's labels; between pulls the caller's context."""
    request = begin(instrumented)

    async def chunks() -> AsyncIterator[str]:
        for _ in range(3):
            yield instrumented.sink.current().get("span_id", "")

    pulled = []
    async for chunk in scoped_async_body(chunks(), request):
        assert current_request() is None
        pulled.append(chunk)
    assert pulled == [hex_id(request.span)] * 3
    request.end()
