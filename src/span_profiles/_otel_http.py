"""OpenTelemetry's HTTP server features for the adapters, taken from OTel's own middleware.

Whoever swaps OTel's ASGI or WSGI middleware for ours keeps its keyword arguments, its environment
variables and what they do: metrics, header capture, excluded URLs, hooks, span details and
``suppress_http_instrumentation()``. Nothing here re-reads those options: each adapter builds OTel's
own middleware (around nothing, or the one it found wrapped inside it) and keeps what OTel's
constructor resolved (the meter and its instruments, the parsed excluded URLs, the hooks made
failsafe, the header lists with their environment fallbacks), so options OTel adds later are
resolved by OTel too. Per request, OTel's own functions collect the header attributes, set the
status and filter the metric attributes; only the order of the calls is written here, because
ours keeps one span per request instead of OTel's receive/send spans.

Only the owner of the request span runs these features. When an outer instrumentation started the
span (OTel's middleware outside ours, FastAPIInstrumentor, ``opentelemetry-instrument``), it
records the metrics, runs the hooks, records exceptions and sends ``traceresponse``; ours only
names and labels the span, so nothing is done twice.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from timeit import default_timer
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.trace import SpanKind
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST as CAPTURE_REQUEST,
)
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE as CAPTURE_RESPONSE,
)
from opentelemetry.util.http import (
    get_custom_headers,
    normalise_request_header_name,
    normalise_response_header_name,
)

from span_profiles import _otel_compat
from span_profiles._request import HTTP_ROUTE
from span_profiles._settings import SettingsError

__all__ = [
    "OPTION_PARSERS",
    "AsgiFeatures",
    "WsgiFeatures",
    "inject_response",
    "option_names",
]

HTTP_TARGET = "http.target"
ERROR_TYPE = "error.type"
_HOOKS = {
    "default_span_details",
    "server_request_hook",
    "client_request_hook",
    "client_response_hook",
    "request_hook",
    "response_hook",
}
_HEADER_LISTS = {
    "http_capture_headers_server_request",
    "http_capture_headers_server_response",
    "http_capture_headers_sanitize_fields",
}


def _otel_parameters(middleware: type) -> frozenset[str]:
    names = list(inspect.signature(middleware).parameters)
    # Drop the wrapped application.
    return frozenset(names[1:])


def option_names(protocol: str) -> frozenset[str]:
    """Every keyword argument OTel's middleware for ``protocol`` (``asgi``/``wsgi``) accepts.

    Read from the installed OTel's signature, so arguments added later are accepted too. The
    WSGI middleware also takes ``excluded_urls``, which OTel's WSGI-based instrumentations
    (Flask, Django) accept.
    """
    if protocol == "asgi":
        from opentelemetry.instrumentation import asgi

        return _otel_parameters(asgi.OpenTelemetryMiddleware)
    from opentelemetry.instrumentation import wsgi

    return _otel_parameters(wsgi.OpenTelemetryMiddleware) | {"excluded_urls"}


def _header_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("expected a list of header names or regexes, or 'a,b' text")


def _validated(name: str, value: Any) -> Any:
    if name in _HOOKS:
        if not callable(value):
            raise ValueError("expected a callable")
        return value
    if name in _HEADER_LISTS:
        return _header_list(value)
    if name == "excluded_urls":
        from opentelemetry.util.http import ExcludeList

        if isinstance(value, ExcludeList):
            return value
        # OTel's own format: comma-separated regexes (a list is joined into it).
        return ",".join(_header_list(value))
    if name == "exclude_spans":
        spans = _header_list(value)
        if not set(spans) <= {"receive", "send"}:
            raise ValueError("expected a list of 'receive' and 'send'")
        return spans
    return value


def _any(value: Any) -> Any:
    return value


def _parser(name: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        return _validated(name, value)

    return parse


OPTION_PARSERS: dict[str, Callable[[Any], Any]] = {
    name: _parser(name)
    for name in (
        *sorted(_HOOKS),
        *sorted(_HEADER_LISTS),
        "excluded_urls",
        "exclude_spans",
    )
}
"""Every keyword argument of OTel's ASGI and WSGI middleware, with its validation (each accepts
its own output). ``tests/asgi/test_otel_parity.py`` fails when OTel adds one not listed here."""
OPTION_PARSERS.update(dict.fromkeys(("tracer_provider", "meter_provider", "tracer", "meter"), _any))


def _for_protocol(protocol: str, options: Mapping[str, Any]) -> dict[str, Any]:
    allowed = option_names(protocol)
    wrong = sorted(set(options) - allowed)
    if wrong:
        raise SettingsError(
            f"{', '.join(wrong)}: not an option of OpenTelemetry's {protocol.upper()} middleware "
            f"(those are: {', '.join(sorted(allowed))})"
        )
    return dict(options)


def _excluded(given: Any, otel_parsed: Any, env_name: str) -> Any:
    from opentelemetry.util.http import get_excluded_urls

    if given is not None:
        return otel_parsed
    # OTel's framework instrumentations read OTEL_PYTHON_<NAME>_EXCLUDED_URLS, falling back to
    # OTEL_PYTHON_EXCLUDED_URLS (get_excluded_urls). Without patterns: None, so that requests
    # do not pay for building a URL that nothing can exclude.
    specific = os.environ.get(f"OTEL_PYTHON_{env_name}_EXCLUDED_URLS")
    if not (specific if specific is not None else os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")):
        return None
    return get_excluded_urls(env_name)


def _otel_given(options: Mapping[str, Any]) -> bool:
    # The adapter's own tracer provider is not a sign of OTel options.
    return any(name != "tracer_provider" for name in options)


def _http_enabled() -> bool:
    return bool(is_http_instrumentation_enabled())


class _Metrics:
    """OTel's server instruments, recorded the way its middleware records them."""

    __slots__ = (
        "active",
        "duration_new",
        "duration_old",
        "module",
        "request_size",
        "response_size",
    )

    def __init__(self, otel: Any, module: Any) -> None:
        self.module = module
        self.duration_old = otel.duration_histogram_old
        self.duration_new = otel.duration_histogram_new
        self.active = otel.active_requests_counter
        # Only the ASGI middleware measures body sizes: (old, new) pairs.
        self.response_size = (
            getattr(otel, "server_response_size_histogram", None),
            getattr(otel, "server_response_body_size_histogram", None),
        )
        self.request_size = (
            getattr(otel, "server_request_size_histogram", None),
            getattr(otel, "server_request_body_size_histogram", None),
        )

    def record(
        self,
        span: trace.Span,
        attributes: dict[str, Any],
        duration_s: float,
        *,
        target: str | None = None,
        request_size: int | None = None,
        response_size: int | None = None,
    ) -> None:
        context = trace.set_span_in_context(span)
        # Only the conventions whose instruments exist (OTEL_SEMCONV_STABILITY_OPT_IN).
        old: dict[str, Any] = {}
        if self.duration_old is not None:
            old = _otel_compat.server_duration_attrs(self.module, attributes, new=False)
            if target:
                old[HTTP_TARGET] = target
        new: dict[str, Any] = {}
        if self.duration_new is not None:
            new = _otel_compat.server_duration_attrs(self.module, attributes, new=True)
        if self.duration_old is not None:
            self.duration_old.record(max(round(duration_s * 1000), 0), old, context=context)
        if self.duration_new is not None:
            self.duration_new.record(max(duration_s, 0), new, context=context)
        for size, histograms in (
            (response_size, self.response_size),
            (request_size, self.request_size),
        ):
            if size is None:
                continue
            for histogram, attrs in zip(histograms, (old, new), strict=True):
                if histogram is not None:
                    histogram.record(size, attrs, context=context)


class AsgiFeatures:
    """What OTel's ASGI middleware resolved from its options, for :class:`SpanProfilesMiddleware`.

    Args:
        options: OTel's keyword arguments (validated by :func:`split_options`).
        tracer_provider: the adapter's tracer provider (OTel's middleware gets it too).
        inner: an OTel ASGI middleware the adapter wraps directly; its options are used when
            ``options`` is empty, and the adapter calls its application instead.
        env_name: the ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` variable to read.
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        tracer_provider: Any | None = None,
        inner: Any | None = None,
        env_name: str = "ASGI",
    ) -> None:
        from opentelemetry.instrumentation import asgi

        self._asgi = asgi
        options = _for_protocol("asgi", options)
        if inner is not None and not _otel_given(options):
            otel = inner
            given_excluded = inner.excluded_urls
        else:

            async def nothing(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
                return None

            kwargs = dict(options)
            if tracer_provider is not None:
                kwargs.setdefault("tracer_provider", tracer_provider)
            otel = asgi.OpenTelemetryMiddleware(nothing, **kwargs)
            given_excluded = options.get("excluded_urls")
        self.mode: Any = _otel_compat.http_semconv_mode()
        self.tracer: trace.Tracer | None = options.get("tracer")
        self.excluded: Any = _excluded(given_excluded, otel.excluded_urls, env_name)
        # Only a span-details callback the user gave overrides our names.
        self.span_details: Callable[[Any], tuple[str, dict[str, Any]]] | None = (
            None
            if otel.default_span_details is asgi.get_default_span_details
            else otel.default_span_details
        )
        self.server_request_hook: Callable[..., None] | None = otel.server_request_hook
        self.client_request_hook: Callable[..., None] | None = otel.client_request_hook
        self.client_response_hook: Callable[..., None] | None = otel.client_response_hook
        self.capture_request: list[str] | None = otel.http_capture_headers_server_request
        self.capture_response: list[str] | None = otel.http_capture_headers_server_response
        self.sanitize: Any = otel.http_capture_headers_sanitize_fields
        self.metrics = _Metrics(otel, asgi)

    def skips(self, scope: Mapping[str, Any], url: Callable[[], str] | None = None) -> bool:
        """Whether this connection passes through untraced: HTTP suppressed, or its URL excluded.

        The URL is built from the scope as OTel's middleware builds it (``url`` is not used).
        """
        if not _http_enabled():
            return True
        if self.excluded is None:
            return False
        host_port_url: Any = self._asgi.get_host_port_url_tuple
        _, _, url = host_port_url(scope)
        return bool(self.excluded.url_disabled(url))

    def details(self, scope: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The user's span name (``None``: ours) and the extra attributes for this connection."""
        if self.span_details is None:
            return None, {}
        name, attributes = self.span_details(scope)
        return name, dict(attributes)

    def begin(
        self, span: trace.Span, scope: MutableMapping[str, Any], attributes: dict[str, Any]
    ) -> AsgiExchange:
        """Start one connection's telemetry on the span this adapter started."""
        return AsgiExchange(self, span, scope, attributes)


Message = MutableMapping[str, Any]


class AsgiExchange:
    """One connection's OTel features: hooks, header capture, status, metrics, ``traceresponse``."""

    __slots__ = ("_active", "_features", "_response_size", "_start", "attributes", "scope", "span")

    def __init__(
        self,
        features: AsgiFeatures,
        span: trace.Span,
        scope: MutableMapping[str, Any],
        attributes: dict[str, Any],
    ) -> None:
        self._features = features
        self._start = default_timer()
        self._response_size: int | None = None
        self.span = span
        self.scope = scope
        self.attributes = attributes
        """The request attributes; the status joins them, as OTel's metrics need."""
        asgi = features._asgi
        if (
            features.capture_request
            and span.is_recording()
            and getattr(span, "kind", None) is SpanKind.SERVER
        ):
            captured = asgi.collect_custom_headers_attributes(
                scope, features.sanitize, features.capture_request, normalise_request_header_name
            )
            if captured:
                span.set_attributes(captured)
        if features.server_request_hook is not None:
            features.server_request_hook(span, scope)
        if scope["type"] == "http":
            self._active = _otel_compat.active_request_attrs(asgi, attributes, features.mode)
            features.metrics.active.add(1, self._active)

    def receive(
        self, receive: Callable[[], Awaitable[Message]]
    ) -> Callable[[], Awaitable[Message]]:
        """``receive`` calling ``client_request_hook`` (with the server span: ours has no other)."""
        hook = self._features.client_request_hook
        if hook is None:
            return receive
        span, scope = self.span, self.scope

        async def hooked_receive() -> Message:
            message = await receive()
            hook(span, scope, message)
            return message

        return hooked_receive

    def sending(self, message: Message) -> None:
        """Called with each message before it is sent: status, headers, hook, ``traceresponse``."""
        features = self._features
        kind = message["type"]
        if features.client_response_hook is not None:
            features.client_response_hook(self.span, self.scope, message)
        status: int | None = None
        if kind == "http.response.start":
            status = message["status"]
        elif kind == "websocket.send":
            # As OTel's middleware: a websocket that sends has succeeded.
            status = 200
        span = self.span
        if (
            features.capture_response
            and "headers" in message
            and span.is_recording()
            and getattr(span, "kind", None) is SpanKind.SERVER
        ):
            captured = features._asgi.collect_custom_headers_attributes(
                message,
                features.sanitize,
                features.capture_response,
                normalise_response_header_name,
            )
            if captured:
                span.set_attributes(captured)
        if status is not None:
            features._asgi.set_status_code(span, status, self.attributes, features.mode)
        if kind in ("http.response.start", "websocket.accept"):
            inject_response(message, span, features._asgi.asgi_setter)
            self._response_size = _content_length(features._asgi.asgi_getter, message)

    def failed(self, exc: BaseException) -> None:
        """Nothing to add: OTel's ASGI middleware puts no ``error.type`` on an exception."""

    def finish(self, route: str | None) -> None:
        """Record the metrics once the connection is over (``route``: the template, if known)."""
        if self.scope["type"] != "http":
            return
        features = self._features
        attributes = self.attributes
        if route:
            attributes[HTTP_ROUTE] = route
        target = _otel_compat.asgi_route_target(self.scope)
        if target:
            _otel_compat.set_http_target(attributes, target, features.mode)
        request_size = _content_length(features._asgi.asgi_getter, self.scope)
        features.metrics.record(
            self.span,
            attributes,
            default_timer() - self._start,
            target=target,
            request_size=request_size,
            response_size=self._response_size,
        )
        features.metrics.active.add(-1, self._active)


def _content_length(getter: Any, carrier: Any) -> int | None:
    values = getter.get(carrier, "content-length")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


def inject_response(carrier: Any, span: trace.Span, setter: Any) -> None:
    """Add the global response propagator's headers (``traceresponse``...) for ``span``."""
    from opentelemetry.instrumentation.propagators import get_global_response_propagator

    get: Any = get_global_response_propagator
    propagator: Any = get()
    if propagator is not None:
        propagator.inject(carrier, context=trace.set_span_in_context(span), setter=setter)


class WsgiFeatures:
    """What OTel's WSGI middleware resolved from its options, for the WSGI and Django adapters.

    Args:
        options: OTel's keyword arguments (validated by :func:`split_options`), plus
            ``excluded_urls``.
        tracer_provider: the adapter's tracer provider (OTel's middleware gets it too).
        inner: an OTel WSGI middleware the adapter wraps directly; its options are used when
            ``options`` is empty.
        env_name: the ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` variable to read (``FLASK``,
            ``DJANGO``...).
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        tracer_provider: Any | None = None,
        inner: Any | None = None,
        env_name: str = "WSGI",
    ) -> None:
        from opentelemetry.instrumentation import wsgi
        from opentelemetry.util.http import parse_excluded_urls

        self._wsgi = wsgi
        options = _for_protocol("wsgi", options)
        kwargs = dict(options)
        given_excluded = kwargs.pop("excluded_urls", None)
        if inner is not None and not _otel_given(options):
            otel = inner
        else:
            if tracer_provider is not None:
                kwargs.setdefault("tracer_provider", tracer_provider)
            otel = wsgi.OpenTelemetryMiddleware(lambda environ, start_response: [], **kwargs)
        self.mode: Any = _otel_compat.http_semconv_mode()
        parsed = (
            given_excluded
            if given_excluded is None or not isinstance(given_excluded, str)
            else parse_excluded_urls(given_excluded)
        )
        self.excluded: Any = _excluded(given_excluded, parsed, env_name)
        self.tracer: trace.Tracer | None = None
        # OTel's WSGI functions read these variables per request; read here once to skip them
        # when nothing is captured (the usual case), then left to OTel's functions.
        self.capture_request = bool(get_custom_headers(CAPTURE_REQUEST))
        self.capture_response = bool(get_custom_headers(CAPTURE_RESPONSE))
        self.request_hook: Callable[..., None] | None = otel.request_hook
        self.response_hook: Callable[..., None] | None = otel.response_hook
        self.metrics = _Metrics(otel, wsgi)

    def skips(self, environ: Mapping[str, Any], url: Callable[[], str] | None = None) -> bool:
        """Whether this request passes through untraced: HTTP suppressed, or its URL excluded.

        ``url`` gives the full URL (default: rebuilt from a WSGI environ, as OTel's Flask
        instrumentation does).
        """
        if not _http_enabled():
            return True
        if self.excluded is None:
            return False
        if url is None:
            import wsgiref.util

            full = wsgiref.util.request_uri(dict(environ))
        else:
            full = url()
        return bool(self.excluded.url_disabled(full))

    def details(self, carrier: Any) -> tuple[str | None, dict[str, Any]]:
        """No span details: OTel's WSGI middleware takes no ``default_span_details``."""
        return None, {}

    def begin(
        self, span: trace.Span, environ: Mapping[str, Any], attributes: dict[str, Any]
    ) -> WsgiExchange:
        """Start one request's telemetry on the span this adapter started.

        ``environ`` is a WSGI environ, or Django's ``request.META`` (which has the same keys).
        """
        return WsgiExchange(self, span, environ, attributes)


class WsgiExchange:
    """One request's OTel features: hooks, header capture, status, error type, metrics."""

    __slots__ = ("_active", "_done", "_features", "_start", "attributes", "environ", "span")

    def __init__(
        self,
        features: WsgiFeatures,
        span: trace.Span,
        environ: Mapping[str, Any],
        attributes: dict[str, Any],
    ) -> None:
        self._features = features
        self.span = span
        self.environ = environ
        self.attributes = attributes
        self._done = False
        wsgi = features._wsgi
        if (
            features.capture_request
            and span.is_recording()
            and getattr(span, "kind", None) is SpanKind.SERVER
        ):
            captured = wsgi.collect_custom_request_headers_attributes(environ)
            if captured:
                span.set_attributes(captured)
        if features.request_hook is not None:
            features.request_hook(span, environ)
        self._start = default_timer()
        self._active = _otel_compat.active_request_attrs(wsgi, attributes, features.mode)
        features.metrics.active.add(1, self._active)

    def responding(self, status: str, headers: list[tuple[str, str]]) -> None:
        """Called from ``start_response``: status, response headers, ``response_hook``."""
        wsgi = self._features._wsgi
        span = self.span
        wsgi.add_response_attributes(span, status, headers, self.attributes, self._features.mode)
        if (
            self._features.capture_response
            and span.is_recording()
            and getattr(span, "kind", None) is SpanKind.SERVER
        ):
            captured = wsgi.collect_custom_response_headers_attributes(headers)
            if captured:
                span.set_attributes(captured)
        if self._features.response_hook is not None:
            self._features.response_hook(span, self.environ, status, headers)

    def failed(self, exc: BaseException) -> None:
        """Add ``error.type`` for an exception the application raised, as OTel's middleware does."""
        if _otel_compat.reports_new(self._features.mode):
            name = type(exc).__qualname__
            self.attributes[ERROR_TYPE] = name
            if self.span.is_recording():
                self.span.set_attribute(ERROR_TYPE, name)

    def finish(self, route: str | None) -> None:
        """Record the metrics once (``route``: the template, if known)."""
        if self._done:
            return
        self._done = True
        if route:
            self.attributes[HTTP_ROUTE] = route
        self._features.metrics.record(self.span, self.attributes, default_timer() - self._start)
        self._features.metrics.active.add(-1, self._active)
