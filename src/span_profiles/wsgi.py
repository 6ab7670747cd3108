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

from opentelemetry import trace
from opentelemetry.util.http import sanitize_method

from span_profiles import _otel_compat, _web
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
_add_response_attributes: Callable[..., None] = _otel_wsgi.add_response_attributes
_wsgi_getter: Any = _otel_wsgi.wsgi_getter
_raw_span_name: Callable[[Environ], str] = _otel_wsgi.get_default_span_name


class _Response:
    """Ends the request span once, with its context current around the end."""

    __slots__ = ("done", "request")

    def __init__(self, request: _web.RequestSpan) -> None:
        self.request = request
        self.done = False

    def close(self, close: Callable[[], object] | None) -> None:
        request = self.request
        token = request.attach()
        try:
            if close is not None:
                close()
        except BaseException as exc:
            request.record_exception(exc)
            raise
        finally:
            request.detach(token)
            if not self.done:
                self.done = True
                request.end()


class ScopedResponse:
    """The response iterable, with the request's context current around each ``next``/``close``."""

    __slots__ = ("_iterable", "_iterator", "_response")

    def __init__(self, iterable: Iterable[bytes], request: _web.RequestSpan) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._response = _Response(request)

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
            request.record_exception(exc)
            raise
        finally:
            request.detach(token)

    def close(self) -> None:
        """Close the application's iterable and end the request span."""
        self._response.close(getattr(self._iterable, "close", None))


class SpanProfilesWSGIMiddleware:
    """WSGI middleware: a server span per request, labelled for profiling.

    Args:
        app: the WSGI application to wrap.
        tracer_provider: the provider to start spans with and to instrument; default: the one
            ``instrument()`` was given, else the global one.
        sink: where labels go when this middleware calls :func:`span_profiles.instrument`.
        settings: already resolved settings (thin adapters pass these).
        **options: any :class:`span_profiles.Settings` field; wins over ``settings`` and the
            environment. An invalid value raises :class:`span_profiles.SettingsError` here.

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
        **options: Any,
    ) -> None:
        self.app = app
        self.settings = _web.resolve_settings(settings, options)
        self._tracer_provider = tracer_provider
        self._ensure_instrumented = _web.ensure_instrumented(tracer_provider, sink, self.settings)
        self._semconv: Any = _otel_compat.http_semconv_mode()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one request."""
        if not self.settings.enabled:
            return self.app(environ, start_response)
        self._ensure_instrumented()
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
            request.set_attributes(attributes)
        semconv = self._semconv

        def start_response_with_status(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo = None
        ) -> Callable[[bytes], object]:
            _add_response_attributes(request.span, status, headers, None, semconv)
            propagator = _web.response_propagator()
            if propagator is not None:
                propagator.inject(
                    headers,
                    context=trace.set_span_in_context(request.span),
                    setter=_otel_wsgi.default_response_propagation_setter,
                )
            return start_response(status, headers, exc_info)

        token = request.attach()
        try:
            iterable = self.app(environ, start_response_with_status)
        except BaseException as exc:
            request.record_exception(exc)
            request.detach(token)
            request.end()
            raise
        request.detach(token)
        return _scoped(iterable, request, environ)


def _scoped(
    iterable: Iterable[bytes], request: _web.RequestSpan, environ: Environ
) -> Iterable[bytes]:
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper):
        # Servers send a file_wrapper with sendfile only if they get it back unwrapped; there is
        # no Python code to label while the kernel copies, so only its close() needs the span.
        response = _Response(request)
        original: Callable[[], object] | None = getattr(iterable, "close", None)
        try:
            iterable.close = lambda: response.close(original)  # type: ignore[attr-defined]
        except AttributeError:
            return ScopedResponse(iterable, request)
        return iterable
    return ScopedResponse(iterable, request)
