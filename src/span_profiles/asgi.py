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

from span_profiles._adapter import AdapterCore
from span_profiles._core.sinks import Sink
from span_profiles._request import RequestSpan, http_method
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
    return http_method(scope.get("method"))


def _template(route: Any) -> str | None:
    # path_format drops convertor suffixes ("{id:int}" -> "{id}"), as OTel's http.route does.
    for attribute in ("path_format", "path"):
        value = getattr(route, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _is_mount(route: Any) -> bool:
    # Mount and Host hold routes of their own; an endpoint route does not.
    return isinstance(getattr(route, "routes", None), list)


class _RoutedScope(dict[str, Any]):
    """The scope handed to the application: it notices the route the router picks, as it does.

    Starlette's router (and FastAPI's routes) store the matched route in ``scope["route"]``
    right before calling the endpoint; renaming the span at that moment gives the endpoint's
    samples the route template from their first step. Every write also goes to the server's
    scope, so code outside this middleware still sees what the application set.
    """

    __slots__ = ("_fixed", "_last", "_origin", "_prefix", "_request")

    def __init__(self, origin: Scope, request: RequestSpan) -> None:
        super().__init__(origin)
        self._origin = origin
        self._request = request
        self._prefix = ""
        self._last: Any = None
        # A route found before the app ran (find_route) is final: renaming after a Mount, even
        # for a moment, would list the span under two names.
        self._fixed = request.route is not None

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
        if self._fixed:
            return
        last = self._last
        if route is last:
            return
        # A route set after a Mount is matched inside it: the Mount's path is its prefix.
        if last is not None and _is_mount(last):
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
        find_route: a function from the scope to the route template the app will pick, or
            ``None``; called before the app runs, so the span is born with its final name
            (:func:`span_profiles.fastapi.instrument_app` passes one for Starlette's router).
            Without it, or when it finds nothing, the span is renamed when the router picks.
        excluded_urls_env: read ``OTEL_PYTHON_<this>_EXCLUDED_URLS`` (falling back to
            ``OTEL_PYTHON_EXCLUDED_URLS``) when ``excluded_urls`` is not given;
            :func:`span_profiles.fastapi.instrument_app` passes ``FASTAPI``, as OTel's FastAPI
            instrumentation reads it.
        **options: any :class:`span_profiles.Settings` field, and any keyword argument of
            OTel's ``OpenTelemetryMiddleware`` (``excluded_urls``, ``server_request_hook``,
            ``meter_provider``, ``http_capture_headers_server_request``...), with OTel's meaning
            and OTel's environment variables (and ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` /
            ``OTEL_PYTHON_EXCLUDED_URLS``). Settings win over ``settings`` and the environment.
            An invalid or unknown option raises :class:`span_profiles.SettingsError` here.

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
        find_route: Callable[[Scope], str | None] | None = None,
        excluded_urls_env: str = "ASGI",
        **options: Any,
    ) -> None:
        inner = app if isinstance(app, _otel_asgi.OpenTelemetryMiddleware) else None
        self._core = AdapterCore.create(
            __name__,
            tracer_provider=tracer_provider,
            sink=sink,
            settings=settings,
            options=options,
            find_route=find_route,
            protocol="asgi",
            inner_otel=inner,
            excluded_urls_env=excluded_urls_env,
        )
        self.settings = self._core.settings
        if inner is not None and self._core.enabled:
            # Stacked right outside OTel's middleware: do its work instead of nesting a span.
            app = inner.app
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        core = self._core
        kind = scope["type"]
        if kind not in ("http", "websocket") or not core.enabled:
            if kind == "lifespan" and core.enabled:
                # Per-loop hooks install on the loop that runs the app: the lifespan's.
                core.ensure_started(on_loop=True)
                send = _stopping_at_shutdown(core, send)
            await self.app(scope, receive, send)
            return
        method = _http_method(scope)
        path = str(scope.get("path", ""))
        request = core.begin(
            method=method,
            carrier=scope,
            getter=_asgi_getter,
            collect=_collect_request_attributes,
            raw_name=f"{method} {path}" if kind == "http" else path,
            route=core.find_route(scope),
            on_loop=True,
        )
        if request is None:
            await self.app(scope, receive, send)
            return
        exchange = request.exchange
        if exchange is not None:
            # Ours started the span: OTel's features (an adopted span's owner runs its own).
            receive = exchange.receive(receive)
            send = _sending(exchange, send)
        with request.activated(end=True):
            await self.app(_RoutedScope(scope, request), receive, send)


def _stopping_at_shutdown(core: AdapterCore, send: Send) -> Send:
    async def send_flushing_first(message: Message) -> None:
        # Before the reply: the server may end the process as soon as it has it.
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            core.ensure_started.stop()
        await send(message)

    return send_flushing_first


def _sending(exchange: Any, send: Send) -> Send:
    async def send_with_telemetry(message: Message) -> None:
        exchange.sending(message)
        await send(message)

    return send_with_telemetry
