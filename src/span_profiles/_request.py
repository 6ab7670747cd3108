"""The server span of one web request, and the scope it runs in: what every adapter shares.

Framework-free: callers hand in the request's method, a carrier with its headers (and the getter
that reads it), the semantic-convention attributes they collected and, when the framework can
tell before the application runs, the route template. This module decides whether to start a
span or to adopt one an outer instrumentation already started, makes it current
(:meth:`RequestSpan.activated`), renames it once the route is known, and ends it.

The "this request is already handled" guard lives in the OpenTelemetry context itself (like
sentry's ContextVar guard in its ASGI integration), so it travels exactly as far as the span does:
a second span-profiles middleware, nested in the first, sees it and passes the request through.

Response bodies that run after the application returned (a WSGI iterable, a Django streaming
response) re-enter the request's context around each chunk with :class:`ScopedBody` and
:func:`scoped_async_body`, on whichever thread the server pulls them, and end the span when the
server closes them (:meth:`RequestSpan.closing`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import sanitize_method
from opentelemetry.util.types import AttributeValue

from span_profiles import _instrument
from span_profiles._core import engine, sampler_gate

__all__ = [
    "HTTP_ROUTE",
    "RequestSpan",
    "ScopedBody",
    "current_request",
    "http_method",
    "scoped_async_body",
    "start",
    "tracer_for",
]

CarrierT = TypeVar("CarrierT")
T = TypeVar("T")

_REQUEST_KEY = otel_context.create_key("span_profiles.request")

HTTP_ROUTE = "http.route"
"""The semantic-convention attribute for the matched route template."""

_NORMAL_ENDS = (StopIteration, StopAsyncIteration, GeneratorExit)
"""Exceptions that end an iteration or a generator: not failures of the request."""


def http_method(raw: object) -> str:
    """The request method as the span name's first word.

    Known methods as OTel spells them; unknown or missing ones are folded into ``HTTP``, because
    the name is a series label and must stay low-cardinality.
    """
    method = sanitize_method(str(raw or "").strip())
    return "HTTP" if not method or method == "_OTHER" else method


class RequestSpan:
    """The server span of one request, started here or adopted from an outer instrumentation.

    ``context`` is the OTel context the request's code runs in: the span is current there, and it
    carries the guard that makes nested span-profiles middlewares pass through.
    """

    __slots__ = (
        "_ended",
        "_held",
        "context",
        "exchange",
        "fixed_name",
        "method",
        "owned",
        "route",
        "span",
        "threaded",
    )

    def __init__(
        self, span: trace.Span, *, owned: bool, method: str, parent: Any, route: str | None = None
    ) -> None:
        self.span = span
        self.owned = owned
        """Whether this adapter started the span (and so ends it)."""
        self.method = method
        self.route: str | None = route
        """The route template, once known."""
        self._ended = False
        self.fixed_name = False
        """The user named the span (OTel's ``default_span_details``): routing keeps the name."""
        self.threaded = False
        """The request runs on a server's worker thread (WSGI, Django's sync chain), not on an
        event loop: its label switches wait for the sampler (:mod:`span_profiles._core.sampler_gate`)."""
        self.exchange: Any = None
        """The request's OTel features (:mod:`span_profiles._otel_http`) when this adapter owns
        the span: told of an exception, and finished (its metrics recorded) when the span ends."""
        self.context = otel_context.set_value(
            _REQUEST_KEY, self, trace.set_span_in_context(span, parent)
        )
        # The request's labels last until end(), even if an adopted span's owner ends the span
        # first (FastAPI's telemetry ends it at the last body message, before the teardown of
        # yield dependencies and the background tasks).
        self._held = engine.holders.get(span)
        if self._held is not None:
            engine.hold(self._held)

    def activated(self, *, end: bool = False) -> Activation:
        """A context manager: the request's context is current inside it.

        An exception escaping the block is recorded on the span. With ``end=True`` the span ends
        on the way out, unless the block called :meth:`Activation.keep_open` (a body that is still
        to be sent) and no exception escaped.
        """
        return Activation(self, end)

    def rename(self, route: str | None) -> None:
        """Name the span ``METHOD route`` (or ``METHOD`` alone) and set ``http.route``.

        Renaming a live root span updates the ``span_name`` label at once, on every thread that
        shows it. Only templates belong here, never raw paths: the label is a series label.
        """
        name = f"{self.method} {route}" if route else self.method
        if route and route != self.route:
            self.route = route
            if self.span.is_recording():
                self.span.set_attribute(HTTP_ROUTE, route)
        if not self.fixed_name and getattr(self.span, "name", None) != name:
            self.span.update_name(name)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set attributes on a recording span."""
        if self.span.is_recording():
            self.span.set_attributes(attributes)

    def record_exception(self, exc: BaseException) -> None:
        """Record ``exc`` on the span and mark it as failed, if this adapter started the span.

        An adopted span's owner (OTel's middleware outside ours...) records the exception
        itself, on its way out: recording it here too would show it twice.
        """
        if not self.owned:
            return
        if self.exchange is not None:
            self.exchange.failed(exc)
        if self.span.is_recording():
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))

    def end(self) -> None:
        """The request is over: end the span once, if this adapter started it (an adopted span
        is its owner's to end), and let its labels go.

        The request's metrics are recorded first, with the route template known by then.
        """
        if self._ended:
            return
        self._ended = True
        if self.owned:
            if self.exchange is not None:
                self.exchange.finish(self.route)
            self.span.end()
        held, self._held = self._held, None
        if held is not None:
            engine.release(held)

    def closing(self, close: Callable[[], object] | None) -> Callable[[], None]:
        """A replacement for a response's ``close``: runs ``close`` in the request's context, then
        ends the span (once, however often it is called)."""

        def close_and_end() -> None:
            with self.activated(end=True):
                if close is not None:
                    close()

        return close_and_end


class Activation:
    """What :meth:`RequestSpan.activated` returns; a class, not a generator, as it runs per chunk."""

    __slots__ = ("_end", "_keep", "_request", "_token")

    def __init__(self, request: RequestSpan, end: bool) -> None:
        self._request = request
        self._end = end
        self._keep = False

    def keep_open(self) -> None:
        """Leave the span open on a normal exit: a body or a closer will end it later."""
        self._keep = True

    def __enter__(self) -> Activation:
        if self._end and self._request.threaded:
            # The request starts (or ends, in a closer) on a worker thread beside the sampler:
            # attach() switches labels. Body chunks in between are not held: a chunk's skew can
            # leave a sample unlabelled, never give it another request's labels.
            sampler_gate.wait()
        self._token = otel_context.attach(self._request.context)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        request = self._request
        failed = False
        if exc is not None and not isinstance(exc, _NORMAL_ENDS):
            failed = True
            request.record_exception(exc)
        if self._end and request.threaded:
            sampler_gate.wait()
        otel_context.detach(self._token)
        if self._end and (failed or not self._keep):
            request.end()


class ScopedBody(Iterator[T]):
    """An iterable whose ``next()`` runs in the request's context, on whatever thread calls it.

    ``close()`` runs ``on_close`` (see :meth:`RequestSpan.closing`), if given. The wrapped
    iterable is iterated lazily, under the context too: a generator's body starts on first
    ``next()``. Like sentry's ``_ScopedResponse``, never across a ``yield``.
    """

    __slots__ = ("_iterable", "_iterator", "_on_close", "_request")

    def __init__(
        self,
        iterable: Iterable[T],
        request: RequestSpan,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._iterable = iterable
        self._iterator: Iterator[T] | None = None
        self._request = request
        self._on_close = on_close

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        with self._request.activated():
            if self._iterator is None:
                self._iterator = iter(self._iterable)
            return next(self._iterator)

    def close(self) -> None:
        """Run the ``on_close`` given (closing the wrapped iterable and ending the span)."""
        if self._on_close is not None:
            self._on_close()


async def scoped_async_body(chunks: AsyncIterable[T], request: RequestSpan) -> AsyncIterator[T]:
    """``chunks`` with the request's context current around each pull, never across a yield."""
    iterator = aiter(chunks)
    while True:
        with request.activated():
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        yield chunk


_tracers: dict[tuple[Any, str], trace.Tracer] = {}


def tracer_for(name: str, tracer_provider: Any | None = None) -> trace.Tracer:
    """A tracer from ``tracer_provider``; by default from the provider ``instrument()`` used.

    Falls back to the global provider. Cached per provider, as this runs once per request.
    """
    provider = tracer_provider
    if provider is None:
        provider = _instrument.installed_tracer_provider() or trace.get_tracer_provider()
    key = (provider, name)
    tracer = _tracers.get(key)
    if tracer is None:
        tracer = _tracers[key] = trace.get_tracer(name, tracer_provider=provider)
    return tracer


def current_request() -> RequestSpan | None:
    """The request span the current context belongs to, if a span-profiles adapter handles it."""
    value = otel_context.get_value(_REQUEST_KEY)
    return value if isinstance(value, RequestSpan) else None


def start(
    tracer: trace.Tracer,
    *,
    method: str,
    carrier: CarrierT,
    getter: Getter[CarrierT],
    attributes: Mapping[str, AttributeValue],
    raw_name: str | None = None,
    route: str | None = None,
    name: str | None = None,
) -> RequestSpan | None:
    """Start the request's server span, or adopt the one already current.

    Returns ``None`` when an outer span-profiles adapter already handles this request: the caller
    passes it through untouched. The span is named ``METHOD route`` when the caller found the
    route template before the application runs, else ``method`` until
    :meth:`RequestSpan.rename` gives it the template. If a recording SERVER span is current
    (FastAPIInstrumentor, FastAPI's own telemetry, ``opentelemetry-instrument``, OTel's own
    middleware outside ours) it is adopted, not duplicated; ``raw_name`` is the name such a
    middleware gives from the raw path, which is replaced so that no raw path reaches the
    ``span_name`` label. ``name`` (from OTel's ``default_span_details``) names the span instead,
    for good: routing does not rename it.
    """
    if otel_context.get_value(_REQUEST_KEY) is not None:
        return None
    current = trace.get_current_span()
    parent = otel_context.get_current()
    if current.is_recording() and getattr(current, "kind", None) is SpanKind.SERVER:
        request = RequestSpan(current, owned=False, method=method, parent=parent)
        if name is not None:
            request.fixed_name = True
            current.update_name(name)
        if route is not None:
            request.rename(route)
        elif raw_name is not None and getattr(current, "name", None) == raw_name:
            current.update_name(method)
        return request
    if current is trace.INVALID_SPAN:
        # A request entering the process: its parent, if any, is the remote caller.
        parent = propagate.extract(carrier, context=parent, getter=getter)
        kind = SpanKind.SERVER
    else:
        # Called from inside a span of this process (an app mounted in another one, a test):
        # the same choice as OTel's instrumentations, which make this an INTERNAL child.
        kind = SpanKind.INTERNAL
    span_name = method
    if route:
        # Born with its final name, so no sample and no span listing ever shows a bare method.
        span_name = f"{method} {route}"
        attributes = {**attributes, HTTP_ROUTE: route}
    span = tracer.start_span(name or span_name, context=parent, kind=kind, attributes=attributes)
    request = RequestSpan(span, owned=True, method=method, parent=parent, route=route or None)
    request.fixed_name = name is not None
    return request
