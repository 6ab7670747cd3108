"""WSGI middleware: one server span per request, covering the whole response body.

::

    from span_profiles.wsgi import SpanProfilesWSGIMiddleware

    application = SpanProfilesWSGIMiddleware(application)

The span carries OpenTelemetry's HTTP semantic-convention attributes (collected by
``opentelemetry-instrumentation-wsgi``) and honours an incoming ``traceparent``. It is current
while the application runs, and again around each ``next()`` and the ``close()`` of the response
iterable, on whichever thread the server calls them (like sentry's ``_ScopedResponse``): streamed
bodies carry the request's labels. It ends when the server closes the response. A response made
with ``wsgi.file_wrapper`` is returned as is, so servers keep their ``sendfile`` fast path; only
its ``close`` is wrapped.

The span is named ``METHOD`` until a framework adapter renames it after routing, or from its
start, ``METHOD /route``, when the ``find_route`` argument finds the route before the
application runs: a function from the environ to the route template (or ``None``) that must not
change the environ; Flask's adapter passes one that matches the URL map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from span_profiles._adapter import AdapterCore, inject_response_headers
from span_profiles._core.sinks import Sink
from span_profiles._request import RequestSpan, ScopedBody, http_method
from span_profiles._settings import Settings

try:
    from opentelemetry.instrumentation import wsgi as _otel_wsgi
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.wsgi needs opentelemetry-instrumentation-wsgi. "
        "Install it with: pip install 'span-profiles[flask]'"
    ) from exc

__all__ = ["Environ", "SpanProfilesWSGIMiddleware", "StartResponse", "WSGIApp"]

Environ = dict[str, Any]
"""A WSGI environ."""
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | None
StartResponse = Callable[..., Callable[[bytes], object]]
"""The WSGI ``start_response`` callable."""
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
"""A WSGI application."""

_collect_request_attributes: Callable[..., dict[str, Any]] = _otel_wsgi.collect_request_attributes
_response_setter: Any = _otel_wsgi.default_response_propagation_setter
_wsgi_getter: Any = _otel_wsgi.wsgi_getter
_raw_span_name: Callable[[Environ], str] = _otel_wsgi.get_default_span_name


class SpanProfilesWSGIMiddleware:
    """WSGI middleware: a server span per request, labelled for profiling.

    Args:
        app: the WSGI application to wrap. If it is OTel's own WSGI ``OpenTelemetryMiddleware``,
            this one takes its place (and its hooks and meter, unless given OTel options
            itself), so the two stacked still give one span.
        tracer_provider: the provider to start spans with and to instrument; default: the one
            ``instrument()`` was given, else the global one.
        sink: where labels go when this middleware calls :func:`span_profiles.instrument`.
        settings: already resolved settings (thin adapters pass these).
        excluded_urls_env: read ``OTEL_PYTHON_<this>_EXCLUDED_URLS`` (falling back to
            ``OTEL_PYTHON_EXCLUDED_URLS``) when ``excluded_urls`` is not given.
        **options: any :class:`span_profiles.Settings` field, any keyword argument of OTel's
            WSGI ``OpenTelemetryMiddleware`` (``request_hook``, ``response_hook``,
            ``meter_provider``) and ``excluded_urls``, with OTel's meaning; OTel's header
            capture variables are honoured. Settings win over ``settings`` and the environment.
            An invalid or unknown option raises :class:`span_profiles.SettingsError` here.

    ``span_profiles.instrument()`` is called on the first request if nothing called it before
    (after a pre-forking server forked). With ``enabled=False`` requests pass straight through.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        tracer_provider: Any | None = None,
        sink: Sink | None = None,
        settings: Settings | None = None,
        find_route: Callable[[Environ], str | None] | None = None,
        excluded_urls_env: str = "WSGI",
        **options: Any,
    ) -> None:
        inner = app if isinstance(app, _otel_wsgi.OpenTelemetryMiddleware) else None
        self._core = AdapterCore.create(
            __name__,
            tracer_provider=tracer_provider,
            sink=sink,
            settings=settings,
            options=options,
            find_route=find_route,
            protocol="wsgi",
            inner_otel=inner,
            excluded_urls_env=excluded_urls_env,
        )
        self.settings = self._core.settings
        if inner is not None and self._core.enabled:
            # Stacked right outside OTel's middleware: do its work instead of nesting a span.
            app = inner.wsgi
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one request."""
        core = self._core
        if not core.enabled:
            return self.app(environ, start_response)
        request = core.begin(
            method=http_method(environ.get("REQUEST_METHOD")),
            carrier=environ,
            getter=_wsgi_getter,
            collect=_collect_request_attributes,
            raw_name=_raw_span_name(environ),
            route=core.find_route(environ),
        )
        if request is None:
            return self.app(environ, start_response)
        exchange = request.exchange
        if exchange is None:
            # An adopted span: its owner records the status and sends traceresponse.
            responding = start_response
        else:

            def responding(
                status: str, headers: list[tuple[str, str]], exc_info: ExcInfo = None
            ) -> Callable[[bytes], object]:
                exchange.responding(status, headers)
                inject_response_headers(request, headers, _response_setter)
                return start_response(status, headers, exc_info)

        with request.activated(end=True) as active:
            iterable = self.app(environ, responding)
            active.keep_open()
        return _scoped(iterable, request, environ)


def _scoped(iterable: Iterable[bytes], request: RequestSpan, environ: Environ) -> Iterable[bytes]:
    close = request.closing(getattr(iterable, "close", None))
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper):
        # Servers send a file_wrapper with sendfile only if they get it back unwrapped; there is
        # no Python code to label while the kernel copies, so only its close() needs the span.
        try:
            iterable.close = close  # type: ignore[attr-defined]
        except AttributeError:
            return ScopedBody(iterable, request, on_close=close)
        return iterable
    return ScopedBody(iterable, request, on_close=close)
