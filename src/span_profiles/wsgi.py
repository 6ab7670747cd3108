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

The span is named ``METHOD`` until a framework adapter renames it after routing (Flask does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from opentelemetry.util.http import sanitize_method

from span_profiles import _otel_http, _web
from span_profiles._core.sinks import Sink
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


class _Response:
    """Ends the request span once, with its context current around the end."""

    __slots__ = ("done", "exchange", "request")

    def __init__(
        self, request: _web.RequestSpan, exchange: _otel_http.WsgiExchange | None = None
    ) -> None:
        self.request = request
        self.exchange = exchange
        self.done = False

    def failed(self, exc: BaseException) -> None:
        if self.request.owned:
            self.request.record_exception(exc)
            if self.exchange is not None:
                self.exchange.failed(exc)

    def close(self, close: Callable[[], object] | None) -> None:
        request = self.request
        token = request.attach()
        try:
            if close is not None:
                close()
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            request.detach(token)
            if not self.done:
                self.done = True
                if self.exchange is not None:
                    self.exchange.finish(request.route)
                request.end()


class ScopedResponse:
    """The response iterable, with the request's context current around each ``next``/``close``."""

    __slots__ = ("_iterable", "_iterator", "_response")

    def __init__(self, iterable: Iterable[bytes], response: _Response) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        request = self._response.request
        token = request.attach()
        try:
            if self._iterator is None:
                self._iterator = iter(self._iterable)
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._response.failed(exc)
            raise
        finally:
            request.detach(token)

    def close(self) -> None:
        """Close the application's iterable and end the request span."""
        self._response.close(getattr(self._iterable, "close", None))


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
        excluded_urls_env: the ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` variable read when
            ``excluded_urls`` is not given (``FLASK`` for the Flask extension); it falls back to
            ``OTEL_PYTHON_EXCLUDED_URLS``.
        **options: any :class:`span_profiles.Settings` field, any keyword argument of OTel's
            WSGI ``OpenTelemetryMiddleware`` (``request_hook``, ``response_hook``,
            ``meter_provider``), and ``excluded_urls``, with OTel's meaning; OTel's header
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
        excluded_urls_env: str = "WSGI",
        **options: Any,
    ) -> None:
        explicit, _, otel_options = _otel_http.split_options("wsgi", options)
        self.settings = _web.resolve_settings(settings, explicit)
        inner = None
        if self.settings.enabled and isinstance(app, _otel_wsgi.OpenTelemetryMiddleware):
            # Stacked right outside OTel's middleware: do its work instead of nesting a span.
            inner, app = app, app.wsgi
        self.app = app
        self._tracer_provider = tracer_provider
        self._ensure_instrumented = _web.ensure_instrumented(tracer_provider, sink, self.settings)
        self._features = _otel_http.WsgiFeatures(
            otel_options, tracer_provider=tracer_provider, inner=inner, env_name=excluded_urls_env
        )
        self._semconv: Any = self._features.mode

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one request."""
        if not self.settings.enabled:
            return self.app(environ, start_response)
        self._ensure_instrumented()
        if self._features.skips(environ):
            return self.app(environ, start_response)
        method = sanitize_method(str(environ.get("REQUEST_METHOD", "")).strip())
        attributes = _web.collect_attributes(_collect_request_attributes, environ, self._semconv)
        request = _web.start(
            _web.tracer_for(__name__, self._tracer_provider),
            method="HTTP" if not method or method == "_OTHER" else method,
            carrier=environ,
            getter=_wsgi_getter,
            attributes=attributes,
            raw_name=_raw_span_name(environ),
        )
        if request is None:
            return self.app(environ, start_response)
        if not request.owned:
            # The outer instrumentation owns the span: it records the status, the exception
            # and the metrics.
            request.set_attributes(attributes)
            response = _Response(request)
            token = request.attach()
            try:
                return _scoped(self.app(environ, start_response), response, environ)
            finally:
                request.detach(token)
        exchange = self._features.begin(request.span, environ, attributes)
        response = _Response(request, exchange)

        def start_response_with_status(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo = None
        ) -> Callable[[bytes], object]:
            exchange.responding(status, headers)
            _otel_http.inject_response(headers, request.span, _response_setter)
            return start_response(status, headers, exc_info)

        token = request.attach()
        try:
            iterable = self.app(environ, start_response_with_status)
        except BaseException as exc:
            response.failed(exc)
            request.detach(token)
            response.close(None)
            raise
        request.detach(token)
        return _scoped(iterable, response, environ)


def _scoped(iterable: Iterable[bytes], response: _Response, environ: Environ) -> Iterable[bytes]:
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper):
        # Servers send a file_wrapper with sendfile only if they get it back unwrapped; there is
        # no Python code to label while the kernel copies, so only its close() needs the span.
        original: Callable[[], object] | None = getattr(iterable, "close", None)
        try:
            iterable.close = lambda: response.close(original)  # type: ignore[attr-defined]
        except AttributeError:
            return ScopedResponse(iterable, response)
        return iterable
    return ScopedResponse(iterable, response)
