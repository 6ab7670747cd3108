"""The Django middleware; import it from :mod:`span_profiles.django`."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from span_profiles import _otel_http, _web
from span_profiles._settings import Settings, SettingsError

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings as _django_conf  # type: ignore[import-untyped, unused-ignore]
    from django.http import HttpRequest, HttpResponseBase  # type: ignore[import-untyped, unused-ignore]
    from opentelemetry.instrumentation import wsgi as _otel_wsgi
    from opentelemetry.util.http import sanitize_method
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.django needs Django and opentelemetry-instrumentation-wsgi. "
        "Install it with: pip install 'span-profiles[django]'"
    ) from exc

__all__ = ["SETTING", "SpanProfilesMiddleware", "django_settings"]

SETTING = "SPAN_PROFILES"
"""The Django setting holding a dict of :class:`span_profiles.Settings` fields."""


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# Used under ASGI when installed; WSGI-only deployments need not install it.
_otel_asgi: Any = _optional_module("opentelemetry.instrumentation.asgi")
_wsgi_getter: Any = _otel_wsgi.wsgi_getter
_raw_span_name: Callable[[Any], str] = _otel_wsgi.get_default_span_name

GetResponse = Callable[[HttpRequest], Any]


class _ResponseHeaderSetter:
    """Sets ``traceresponse`` (and other response-propagator headers) on a Django response."""

    def set(self, carrier: Any, key: str, value: str) -> None:
        """Set header ``key``."""
        carrier[key] = value


_response_setter = _ResponseHeaderSetter()


def django_settings(**explicit: Any) -> Settings:
    """Resolve ``explicit`` > ``settings.SPAN_PROFILES`` > environment > defaults.

    Raises :class:`span_profiles.SettingsError` naming a bad or unknown setting (the OTel
    middleware options ``SPAN_PROFILES`` may hold are validated too).
    """
    return _django_options(explicit)[0]


def _django_options(explicit: Mapping[str, Any]) -> tuple[Settings, dict[str, Any]]:
    framework = getattr(_django_conf, SETTING, None)
    if framework is not None and not isinstance(framework, Mapping):
        raise SettingsError(
            f"settings.{SETTING} must be a dict of span-profiles settings, not {framework!r}"
        )
    where = f"settings.{SETTING}"
    ours, configured, otel = _otel_http.split_options(
        "wsgi", explicit, framework, framework_name=where
    )
    return Settings.resolve(ours, configured, framework_name=where), otel


class _Serving:
    """The request span is current inside the ``with``; it ends on exit unless deferred."""

    __slots__ = ("deferred", "exchange", "request", "token")

    def __init__(self, request: _web.RequestSpan, exchange: _otel_http.WsgiExchange | None) -> None:
        self.request = request
        self.exchange = exchange
        self.deferred = False

    def end(self) -> None:
        """Record the request's metrics and end its span."""
        if self.exchange is not None:
            self.exchange.finish(self.request.route)
        self.request.end()

    def __enter__(self) -> _Serving:
        self.token = self.request.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.request.owned:
            self.request.record_exception(exc)
            if self.exchange is not None:
                self.exchange.failed(exc)
        self.request.detach(self.token)
        if exc is not None or not self.deferred:
            self.end()


class SpanProfilesMiddleware:
    """Django middleware: one server span per request, current around ``get_response``.

    Place it first in ``MIDDLEWARE``. The span is renamed ``METHOD route`` in ``process_view``,
    as soon as the URL resolver has matched, so the view's samples carry the route template.
    Streaming responses keep the span, and their chunks the labels, until Django closes them.
    If ``opentelemetry-instrumentation-django`` (or an outer ASGI/WSGI middleware) already
    started a server span, that span is reused.

    ``SPAN_PROFILES`` also takes the options of :class:`span_profiles.wsgi.SpanProfilesWSGIMiddleware`
    that come from OTel (``excluded_urls``, ``request_hook``, ``response_hook``,
    ``meter_provider``, ``tracer_provider``); the hooks get ``request.META`` as the environ.
    ``OTEL_PYTHON_DJANGO_EXCLUDED_URLS`` is read as OTel's Django instrumentation reads it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.settings, otel_options = _django_options({})
        self._tracer_provider = otel_options.get("tracer_provider")
        self._features = _otel_http.WsgiFeatures(otel_options, env_name="DJANGO")
        self._semconv: Any = self._features.mode
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            # Django runs a sync process_view of an async middleware in a worker thread; the
            # async twin renames without that hop.
            self.process_view = self._process_view_async  # type: ignore[method-assign, assignment]
        # Started on the first request, not here: with gunicorn's preload_app Django builds the
        # middleware chain in the master, and the agent must not start before the fork.
        self._ensure_started = _web.ensure_instrumented(self._tracer_provider, None, self.settings)

    def __call__(self, request: HttpRequest) -> Any:
        """Handle one request (returns a coroutine when Django runs the chain async)."""
        if self._async:
            return self._call_async(request)
        serving = self._start(request)
        if serving is None:
            return self.get_response(request)
        with serving:
            response = self.get_response(request)
            self._finish(serving, response)
        return response

    async def _call_async(self, request: HttpRequest) -> Any:
        serving = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if serving is None:
            return await get_response(request)
        with serving:
            response = await get_response(request)
            self._finish(serving, response)
        return response

    def _start(self, request: HttpRequest) -> _Serving | None:
        if not self.settings.enabled:
            return None
        self._ensure_started()
        if self._features.skips(request.META, url=lambda: request.build_absolute_uri("?")):
            return None
        method = sanitize_method(str(request.method or "").strip())
        method = "HTTP" if not method or method == "_OTHER" else method
        scope = getattr(request, "scope", None)
        if isinstance(scope, dict) and _otel_asgi is not None:
            # Under ASGI, META is only WSGI-like: the scope is what OTel's collector expects.
            carrier: Any = scope
            getter: Any = _otel_asgi.asgi_getter
            collect: Any = _otel_asgi.collect_request_attributes
            raw_name = f"{method} {scope.get('path', '')}"
        else:
            carrier, getter = request.META, _wsgi_getter
            collect = _otel_wsgi.collect_request_attributes
            raw_name = _raw_span_name(carrier)
        attributes = _web.collect_attributes(collect, carrier, self._semconv)
        request_span = _web.start(
            _web.tracer_for(__name__, self._tracer_provider),
            method=method,
            carrier=carrier,
            getter=getter,
            attributes=attributes,
            raw_name=raw_name,
        )
        if request_span is None:
            # An outer span-profiles middleware (ASGI or WSGI) owns the span; process_view
            # still renames it.
            return None
        if not request_span.owned:
            # The outer instrumentation owns the span: it records the status, the exception
            # and the metrics.
            request_span.set_attributes(attributes)
            return _Serving(request_span, None)
        return _Serving(
            request_span, self._features.begin(request_span.span, request.META, attributes)
        )

    def _finish(self, serving: _Serving, response: Any) -> None:
        request_span = serving.request
        if not isinstance(response, HttpResponseBase):
            return
        if serving.exchange is not None:
            reason = getattr(response, "reason_phrase", "") or "-"
            serving.exchange.responding(f"{response.status_code} {reason}", list(response.items()))
            _otel_http.inject_response(response, request_span.span, _response_setter)
        if response.streaming:
            serving.deferred = True
            _keep_span_until_closed(response, serving)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        """Rename the request span after the resolved route (runs right before the view)."""
        _rename(request)

    async def _process_view_async(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        _rename(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Record a view's exception on the span (Django turns it into a 500 response)."""
        request_span = _web.current_request()
        if request_span is not None and request_span.owned:
            request_span.record_exception(exception)


def _rename(request: HttpRequest) -> None:
    request_span = _web.current_request()
    match = request.resolver_match
    route = getattr(match, "route", None)
    if request_span is not None and isinstance(route, str):
        # The root pattern is the empty string; "GET /" reads better than a bare "GET".
        request_span.rename(route or "/")


def _keep_span_until_closed(response: Any, serving: _Serving) -> None:
    request_span = serving.request
    # A FileResponse may be sent with wsgi.file_wrapper (sendfile): only its close matters.
    if getattr(response, "file_to_stream", None) is None:
        if response.is_async:
            response.streaming_content = _scoped_async(response.streaming_content, request_span)
        else:
            response.streaming_content = _scoped_sync(response.streaming_content, request_span)
    original_close: Callable[[], None] = response.close
    ended = False

    def close() -> None:
        nonlocal ended
        try:
            original_close()
        finally:
            if not ended:
                ended = True
                serving.end()

    response.close = close


def _scoped_sync(chunks: Iterable[bytes], request_span: _web.RequestSpan) -> Iterator[bytes]:
    # The server may pull chunks on another thread (ASGI: a sync_to_async worker): the context
    # is attached around each pull, never across a yield.
    iterator = iter(chunks)
    while True:
        token = request_span.attach()
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            request_span.record_exception(exc)
            raise
        finally:
            request_span.detach(token)
        yield chunk


async def _scoped_async(
    chunks: AsyncIterator[bytes], request_span: _web.RequestSpan
) -> AsyncIterator[bytes]:
    iterator = aiter(chunks)
    while True:
        token = request_span.attach()
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except BaseException as exc:
            request_span.record_exception(exc)
            raise
        finally:
            request_span.detach(token)
        yield chunk
