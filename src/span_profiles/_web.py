"""The server span of one web request, shared by the ASGI, WSGI and Django adapters.

Framework-free: callers hand in the request's method, a carrier with its headers (and the getter
that reads it) and the semantic-convention attributes they collected. This module decides whether
to start a span or to adopt one an outer instrumentation already started, makes it current, renames
it once the route is known, and ends it.

The "this request is already handled" guard lives in the OpenTelemetry context itself (like
sentry's ContextVar guard in its ASGI integration), so it travels exactly as far as the span does:
a second span-profiles middleware, nested in the first, sees it and passes the request through.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from span_profiles import _instrument
from span_profiles._core import guard
from span_profiles._instrument import instrument, is_instrumented
from span_profiles._settings import Settings

__all__ = [
    "RequestSpan",
    "current_request",
    "ensure_instrumented",
    "resolve_settings",
    "start",
    "tracer_for",
]

CarrierT = TypeVar("CarrierT")

_REQUEST_KEY = otel_context.create_key("span_profiles.request")

HTTP_ROUTE = "http.route"
"""The semantic-convention attribute for the matched route template."""


class RequestSpan:
    """The server span of one request, started here or adopted from an outer instrumentation.

    ``context`` is the OTel context the request's code runs in: the span is current there, and it
    carries the guard that makes nested span-profiles middlewares pass through.
    """

    __slots__ = ("context", "fixed_name", "method", "owned", "route", "span")

    def __init__(self, span: trace.Span, *, owned: bool, method: str, parent: Any) -> None:
        self.span = span
        self.owned = owned
        """Whether this adapter started the span (and so ends it)."""
        self.method = method
        self.route: str | None = None
        """The route template, once known."""
        self.fixed_name = False
        """The user named the span (OTel's ``default_span_details``): routing keeps the name."""
        self.context = otel_context.set_value(
            _REQUEST_KEY, self, trace.set_span_in_context(span, parent)
        )

    def attach(self) -> Token[Any]:
        """Make the request's context current on this thread or task; undo with :meth:`detach`."""
        return otel_context.attach(self.context)

    @staticmethod
    def detach(token: Token[Any]) -> None:
        """Restore the context that was current before :meth:`attach` returned ``token``."""
        otel_context.detach(token)

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
        """Record ``exc`` on the span and mark it as failed."""
        if self.span.is_recording():
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))

    def end(self) -> None:
        """End the span if this adapter started it (an adopted span is its owner's to end)."""
        if self.owned:
            self.span.end()


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
    name: str | None = None,
) -> RequestSpan | None:
    """Start the request's server span, or adopt the one already current.

    Returns ``None`` when an outer span-profiles adapter already handles this request: the caller
    passes it through untouched. The span is named ``method`` until :meth:`RequestSpan.rename`
    gives it the route template. If a recording SERVER span is current (FastAPIInstrumentor,
    ``opentelemetry-instrument``, OTel's own middleware outside ours) it is adopted, not
    duplicated; ``raw_name`` is the name such a middleware gives from the raw path, which is
    replaced by ``method`` so that no raw path reaches the ``span_name`` label. ``name`` (from
    OTel's ``default_span_details``) names the span instead, for good: routing does not rename it.
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
    span = tracer.start_span(name or method, context=parent, kind=kind, attributes=attributes)
    request = RequestSpan(span, owned=True, method=method, parent=parent)
    request.fixed_name = name is not None
    return request


def resolve_settings(
    settings: Settings | None,
    options: Mapping[str, Any],
    framework: Mapping[str, Any] | None = None,
    *,
    framework_name: str = "framework settings",
) -> Settings:
    """Resolve an adapter's settings: explicit options > ``settings`` / framework > environment.

    ``settings`` (already resolved by a thin adapter) takes the place of the framework settings
    and of the environment, which it already includes.
    """
    if settings is not None:
        return settings.with_overrides(**options)
    return Settings.resolve(options, framework, framework_name=framework_name)


def ensure_instrumented(
    tracer_provider: Any | None, sink: Any | None, settings: Settings
) -> Callable[[], None]:
    """A callable that instruments and starts the profiler once per process, on first use.

    Adapters call it at lifespan startup and on every request: the first call in a (forked)
    worker process runs :func:`span_profiles.instrument` if nothing else did, and starts the
    pyroscope-io agent as ``settings.profiler`` says. Starting it here, lazily, is what keeps it
    fork-safe under pre-forking servers: the agent never runs in a process that forks later.
    Inside a running event loop, the agent's threads and the loop thread are pinned to one CPU
    as ``settings.pin_cpu`` says (see :mod:`span_profiles._profiler`).
    """
    done_in: list[int] = []
    # One lock per process: a lock held by another thread at fork time stays held in the child.
    locks: dict[int, threading.Lock] = {}

    def ensure() -> None:
        pid = os.getpid()
        if done_in and done_in[0] == pid:
            return
        # Concurrent first requests wait here, so none of them runs unlabelled.
        with locks.setdefault(pid, threading.Lock()):
            if not (done_in and done_in[0] == pid):
                _start_once(tracer_provider, sink, settings)
                done_in[:] = [pid]

    return ensure


def _start_once(tracer_provider: Any | None, sink: Any | None, settings: Settings) -> None:
    if not is_instrumented():
        instrument(tracer_provider=tracer_provider, sink=sink, settings=settings)
    if settings.profiler == "off":
        return
    from span_profiles._profiler import in_event_loop, pin_current_thread, start_profiler

    try:
        start_profiler(settings=settings, tracer_provider=tracer_provider)
        if in_event_loop():
            # The agent may have started before the loop (gunicorn post_worker_init, app
            # import): this thread runs the loop, so it joins the agent's CPU.
            pin_current_thread()
    except Exception as exc:
        guard.fail("starting the profiler", exc)


def response_propagator() -> Any:
    """The global response propagator (``OTEL_PROPAGATORS`` for responses), or ``None``."""
    from opentelemetry.instrumentation import propagators

    get: Any = propagators.get_global_response_propagator
    return get()


def collect_attributes(
    collect: Callable[..., dict[str, Any]], carrier: Any, semconv: Any
) -> dict[str, Any]:
    """Run one of OTel's ``collect_request_attributes``; ``{}`` if it chokes on the request.

    They assume what real servers send (an int port, ``wsgi.url_scheme``...); test clients and
    odd servers do not always, and a request must never fail because of its attributes.
    """
    try:
        return collect(carrier, semconv)
    except Exception as exc:
        guard.fail("collecting request attributes", exc)
        return {}
