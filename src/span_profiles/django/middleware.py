"""The Django middleware; import it from :mod:`span_profiles.django`."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from span_profiles._adapter import AdapterCore, inject_response_headers, resolve_options
from span_profiles._request import (
    Activation,
    RequestSpan,
    ScopedBody,
    current_request,
    http_method,
    scoped_async_body,
)
from span_profiles._settings import Settings, SettingsError

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings as _django_conf  # type: ignore[import-untyped, unused-ignore]
    from django.http import HttpRequest, HttpResponseBase  # type: ignore[import-untyped, unused-ignore]
    from django.urls import Resolver404, get_resolver  # type: ignore[import-untyped, unused-ignore]
    from opentelemetry.instrumentation import wsgi as _otel_wsgi
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.django needs Django and opentelemetry-instrumentation-wsgi. "
        "Install it with: pip install 'span-profiles[django]'"
    ) from exc

__all__ = ["SETTING", "SpanProfilesMiddleware", "django_settings"]

SETTING = "SPAN_PROFILES"
"""The Django setting holding a dict of :class:`span_profiles.Settings` fields."""

_FRAMEWORK_NAME = f"settings.{SETTING}"


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
    """Sets ``traceresponse`` (and the other response-propagator headers) on a Django response."""

    def set(self, carrier: Any, key: str, value: str) -> None:
        """Set header ``key``."""
        carrier[key] = value


_response_setter = _ResponseHeaderSetter()


def _framework_options() -> Mapping[str, Any] | None:
    framework = getattr(_django_conf, SETTING, None)
    if framework is not None and not isinstance(framework, Mapping):
        raise SettingsError(
            f"settings.{SETTING} must be a dict of span-profiles settings, not {framework!r}"
        )
    return framework


def django_settings(**explicit: Any) -> Settings:
    """Resolve ``explicit`` > ``settings.SPAN_PROFILES`` > environment > defaults.

    ``SPAN_PROFILES`` goes through the same resolution as the middleware's own options, so it
    takes every option they take. Raises :class:`span_profiles.SettingsError` naming a bad or
    unknown setting.
    """
    settings, _ = resolve_options(explicit, _framework_options(), framework_name=_FRAMEWORK_NAME)
    return settings


def _route_of(match: Any) -> str | None:
    route = getattr(match, "route", None)
    # The root pattern is the empty string; "GET /" reads better than a bare "GET".
    return (route or "/") if isinstance(route, str) else None


def _resolve_early(request: HttpRequest) -> str | None:
    # What Django's BaseHandler.resolve_request does, minus storing the match: middlewares
    # after this one may still set request.urlconf, and process_view then renames.
    try:
        match = get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Resolver404:
        return None
    return _route_of(match)


class SpanProfilesMiddleware:
    """Django middleware: one server span per request, current around ``get_response``.

    Place it first in ``MIDDLEWARE``. The URL resolver is asked for the route before the other
    middlewares run, so the span is born named ``METHOD route`` and no sample of the request
    carries a bare method; ``process_view`` renames it should the resolver's final answer differ
    (a middleware that sets ``request.urlconf``). Streaming responses keep the span, and their
    chunks the labels, until Django closes them. If ``opentelemetry-instrumentation-django`` (or
    an outer ASGI/WSGI middleware) already started a server span, that span is reused.

    ``SPAN_PROFILES`` also takes OTel's WSGI middleware options (``excluded_urls``,
    ``request_hook``, ``response_hook``, ``meter_provider``, ``tracer_provider``); the hooks get
    ``request.META`` as the environ. ``OTEL_PYTHON_DJANGO_EXCLUDED_URLS`` is read as OTel's Django
    instrumentation reads it, falling back to ``OTEL_PYTHON_EXCLUDED_URLS``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        # Started on the first request, not here: with gunicorn's preload_app Django builds the
        # middleware chain in the master, and the agent must not start before the fork.
        self._core = AdapterCore.create(
            __name__,
            framework=_framework_options(),
            framework_name=_FRAMEWORK_NAME,
            find_route=_resolve_early,
            protocol="wsgi",
            excluded_urls_env="DJANGO",
        )
        self.settings = self._core.settings
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            # Django runs a sync process_view of an async middleware in a worker thread; the
            # async twin renames without that hop.
            self.process_view = self._process_view_async  # type: ignore[method-assign, assignment]

    def __call__(self, request: HttpRequest) -> Any:
        """Handle one request (returns a coroutine when Django runs the chain async)."""
        if self._async:
            return self._call_async(request)
        request_span = self._start(request, on_loop=False)
        if request_span is None:
            return self.get_response(request)
        with request_span.activated(end=True) as active:
            response = self.get_response(request)
            self._finish(active, request_span, response)
        return response

    async def _call_async(self, request: HttpRequest) -> Any:
        request_span = self._start(request, on_loop=True)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if request_span is None:
            return await get_response(request)
        with request_span.activated(end=True) as active:
            response = await get_response(request)
            self._finish(active, request_span, response)
        return response

    def _start(self, request: HttpRequest, *, on_loop: bool) -> RequestSpan | None:
        core = self._core
        if not core.enabled:
            return None
        method = http_method(request.method)
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
        # None: an outer span-profiles middleware (ASGI or WSGI) owns the span; process_view
        # still renames it.
        return core.begin(
            method=method,
            carrier=carrier,
            getter=getter,
            collect=collect,
            raw_name=raw_name,
            route=core.find_route(request),
            on_loop=on_loop,
            environ=request.META,
            url=lambda: request.build_absolute_uri("?"),
        )

    def _finish(self, active: Activation, request_span: RequestSpan, response: Any) -> None:
        if not isinstance(response, HttpResponseBase):
            return
        exchange = request_span.exchange
        if exchange is not None:
            # Ours started the span (an adopted span's owner records its own status).
            reason = getattr(response, "reason_phrase", "") or "-"
            exchange.responding(f"{response.status_code} {reason}", list(response.items()))
            inject_response_headers(request_span, response, _response_setter)
        if response.streaming:
            active.keep_open()
            _keep_span_until_closed(response, request_span)

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
        request_span = current_request()
        if request_span is not None:
            request_span.record_exception(exception)


def _rename(request: HttpRequest) -> None:
    request_span = current_request()
    route = _route_of(request.resolver_match)
    if request_span is not None and route is not None:
        request_span.rename(route)


def _keep_span_until_closed(response: Any, request_span: RequestSpan) -> None:
    # A FileResponse may be sent with wsgi.file_wrapper (sendfile): only its close matters.
    # The server may pull chunks on another thread (ASGI: a sync_to_async worker).
    if getattr(response, "file_to_stream", None) is None:
        if response.is_async:
            response.streaming_content = scoped_async_body(response.streaming_content, request_span)
        else:
            response.streaming_content = ScopedBody(response.streaming_content, request_span)
    response.close = request_span.closing(response.close)
