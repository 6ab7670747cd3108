"""ASGI middleware: one server span per HTTP request or websocket, named after its route template.

::

    from span_profiles.asgi import SpanProfilesMiddleware

    app = SpanProfilesMiddleware(app)                  # any ASGI app
    app.add_middleware(SpanProfilesMiddleware)         # Starlette / FastAPI

The span carries OpenTelemetry's HTTP semantic-convention attributes (collected by
``opentelemetry-instrumentation-asgi``), honours an incoming ``traceparent``, and stays open until
the application returns: streamed bodies and Starlette background tasks run inside it, so their
samples carry its labels. Its name, and the ``span_name`` label, is ``METHOD`` until the router
picks a route, then ``METHOD /route/{template}``; the raw path is never used.

If a server span is already current (FastAPIInstrumentor, ``opentelemetry-instrument``, OTel's
ASGI middleware outside this one) it is adopted rather than duplicated, and a second
``SpanProfilesMiddleware`` inside the first passes requests through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry.util.http import sanitize_method

from span_profiles import _otel_http, _web
from span_profiles._core.sinks import Sink
from span_profiles._settings import Settings

try:
    from opentelemetry.instrumentation import asgi as _otel_asgi  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.asgi needs opentelemetry-instrumentation-asgi. "
        "Install it with: pip install 'span-profiles[fastapi]'"
    ) from exc

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "SpanProfilesMiddleware"]

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

_collect_request_attributes: Callable[..., dict[str, Any]] = _otel_asgi.collect_request_attributes
_asgi_getter: Any = _otel_asgi.asgi_getter

_WEBSOCKET = "WEBSOCKET"
"""The span name's "method" for a websocket connection, which has none."""


def _http_method(scope: Scope) -> str:
    if scope["type"] == "websocket":
        return _WEBSOCKET
    method = sanitize_method(str(scope.get("method", "")).strip())
    # Unknown methods are folded into one value: the name is a series label.
    return "HTTP" if not method or method == "_OTHER" else method


def _template(route: Any) -> str | None:
    # path_format drops convertor suffixes ("{id:int}" -> "{id}"), as OTel's http.route does.
    for attribute in ("path_format", "path"):
        value = getattr(route, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


class _RoutedScope(dict[str, Any]):
    """The scope handed to the application: it notices the route the router picks, as it does.

    Starlette's router (and FastAPI's routes) store the matched route in ``scope["route"]``
    right before calling the endpoint; renaming the span at that moment gives the endpoint's
    samples the route template from their first step. Every write also goes to the server's
    scope, so code outside this middleware still sees what the application set.
    """

    __slots__ = ("_last", "_origin", "_prefix", "_request")

    def __init__(self, origin: Scope, request: _web.RequestSpan) -> None:
        super().__init__(origin)
        self._origin = origin
        self._request = request
        self._prefix = ""
        self._last: Any = None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._origin[key] = value
        if key == "route":
            self._routed(value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._origin.pop(key, None)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Like ``dict.setdefault``, writing through to the server's scope."""
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        """Like ``dict.pop``, writing through to the server's scope."""
        self._origin.pop(key, None)
        return super().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Like ``dict.update``, writing through and noticing a ``route`` key."""
        items: dict[str, Any] = dict(*args, **kwargs)
        super().update(items)
        self._origin.update(items)
        if "route" in items:
            self._routed(items["route"])

    def _routed(self, route: Any) -> None:
        last = self._last
        if route is last:
            return
        # A route set after a Mount is matched inside it: the Mount's path is its prefix.
        if last is not None and isinstance(getattr(last, "routes", None), list):
            path = getattr(last, "path", "")
            self._prefix += path if isinstance(path, str) else ""
        self._last = route
        template = _template(route)
        if template is not None:
            self._request.rename(self._prefix + template)


class SpanProfilesMiddleware:
    """Pure ASGI middleware: a server span per request, labelled for profiling.

    Args:
        app: the ASGI application to wrap. If it is OTel's own ASGI ``OpenTelemetryMiddleware``,
            this one takes its place (and its options, unless given OTel options itself), so
            the two stacked still give one span.
        tracer_provider: the provider to start spans with and to instrument; default: the one
            ``instrument()`` was given, else the global one.
        sink: where labels go when this middleware calls :func:`span_profiles.instrument`.
        settings: already resolved settings (thin adapters pass these).
        **options: any :class:`span_profiles.Settings` field, and any keyword argument of
            OTel's ``OpenTelemetryMiddleware`` (``excluded_urls``, ``server_request_hook``,
            ``meter_provider``, ``http_capture_headers_server_request``...), with OTel's meaning
            and OTel's environment variables. Settings win over ``settings`` and the
            environment. An invalid or unknown option raises :class:`span_profiles.SettingsError`.

    ``span_profiles.instrument()`` is called at lifespan startup or on the first request if it
    has not been called yet. With ``enabled=False`` the middleware passes everything through.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        tracer_provider: Any | None = None,
        sink: Sink | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        explicit, _, otel_options = _otel_http.split_options("asgi", options)
        self.settings = _web.resolve_settings(settings, explicit)
        inner = None
        if self.settings.enabled and isinstance(app, _otel_asgi.OpenTelemetryMiddleware):
            # Stacked right outside OTel's middleware: do its work instead of nesting a span.
            inner, app = app, app.app
        self.app = app
        self._tracer_provider = tracer_provider
        self._ensure_instrumented = _web.ensure_instrumented(tracer_provider, sink, self.settings)
        self._features = _otel_http.AsgiFeatures(
            otel_options, tracer_provider=tracer_provider, inner=inner
        )
        self._semconv: Any = self._features.mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.settings.enabled:
            if kind == "lifespan" and self.settings.enabled:
                # Per-loop hooks install on the loop that runs the app: the lifespan's.
                self._ensure_instrumented()
            await self.app(scope, receive, send)
            return
        self._ensure_instrumented()
        features = self._features
        if features.skips(scope):
            await self.app(scope, receive, send)
            return
        method = _http_method(scope)
        path = str(scope.get("path", ""))
        name, extra = features.details(scope)
        attributes = _web.collect_attributes(_collect_request_attributes, scope, self._semconv)
        attributes.update(extra)
        request = _web.start(
            features.tracer or _web.tracer_for(__name__, self._tracer_provider),
            method=method,
            carrier=scope,
            getter=_asgi_getter,
            attributes=attributes,
            raw_name=f"{method} {path}" if kind == "http" else path,
            name=name,
        )
        if request is None:
            await self.app(scope, receive, send)
            return
        exchange = None
        if request.owned:
            exchange = features.begin(request.span, scope, attributes)
            receive = exchange.receive(receive)
            send = _sending(exchange, send)
        else:
            # The outer instrumentation owns the span: it records the status, the exception
            # and the metrics, and sends traceresponse.
            request.set_attributes(attributes)
        routed = _RoutedScope(scope, request)
        token = request.attach()
        try:
            await self.app(routed, receive, send)
        except BaseException as exc:
            if request.owned:
                request.record_exception(exc)
            raise
        finally:
            request.detach(token)
            if exchange is not None:
                exchange.finish(request.route)
            request.end()


def _sending(exchange: _otel_http.AsgiExchange, send: Send) -> Send:
    async def send_with_telemetry(message: Message) -> None:
        exchange.sending(message)
        await send(message)

    return send_with_telemetry
