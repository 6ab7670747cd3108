"""FastAPI and Starlette: add :class:`span_profiles.asgi.SpanProfilesMiddleware` to an app.

::

    from span_profiles.fastapi import instrument_app

    app = FastAPI()
    instrument_app(app, scope="root")     # or: app.add_middleware(SpanProfilesMiddleware)

Async and sync endpoints and dependencies, streamed responses and background tasks all run inside
the request's span and carry its labels; ``span_name`` is the route template, e.g.
``GET /items/{item_id}``. Works on asyncio, uvloop and trio (Starlette runs on anyio).

:func:`instrument_app` also matches the app's routes against each request before any middleware
or endpoint runs (:func:`route_finder`), so the span is born with its route template and no sample
of a routed request carries a bare method. With ``app.add_middleware(SpanProfilesMiddleware)``,
pass ``find_route=route_finder(app)`` for the same; without it the span is renamed when the
router picks the route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from span_profiles._adapter import resolve_options
from span_profiles._core import engine
from span_profiles._core.processor import ServerRoot, expected_server_root
from span_profiles._core.sinks import Sink
from span_profiles.asgi import Scope, SpanProfilesMiddleware
from span_profiles.asgi import _template as _route_template

try:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute, Match, Router
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.fastapi needs Starlette (FastAPI brings it). "
        "Install it with: pip install 'span-profiles[fastapi]'"
    ) from exc

_iter_route_contexts: Callable[[Sequence[BaseRoute]], Iterable[Any]] | None
try:
    from fastapi.routing import iter_route_contexts as _iter_route_contexts
except ImportError:  # Starlette alone, or a FastAPI whose routes list is already flat
    _iter_route_contexts = None

__all__ = ["SpanProfilesMiddleware", "instrument_app", "route_finder"]


def instrument_app(
    app: Starlette,
    *,
    tracer_provider: Any | None = None,
    sink: Sink | None = None,
    **options: Any,
) -> Starlette:
    """Add :class:`SpanProfilesMiddleware` to a FastAPI or Starlette app (once) and return it.

    ``options`` are :class:`span_profiles.Settings` fields and OTel's ASGI middleware options
    (as ``FastAPIInstrumentor.instrument_app`` takes them: ``excluded_urls``, the hooks,
    ``meter_provider``...); ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` is read as OTel's FastAPI
    instrumentation reads it. They are validated now, so a bad value raises
    :class:`span_profiles.SettingsError` here rather than on the first request.
    Calling it again on the same app changes nothing. The span is named from the app's routes
    before the app runs (:func:`route_finder`).
    """
    if any(m.cls is SpanProfilesMiddleware for m in app.user_middleware):
        return app
    # Resolved now, because Starlette builds the middleware stack only on the first request.
    settings, other = resolve_options(options)
    find_route = route_finder(app)
    app.add_middleware(
        SpanProfilesMiddleware,
        tracer_provider=tracer_provider,
        sink=sink,
        settings=settings,
        find_route=find_route,
        excluded_urls_env="FASTAPI",
        **other,
    )
    if settings.enabled:
        _name_native_telemetry(app, find_route)
    return app


def _name_native_telemetry(app: Starlette, find_route: Callable[[Scope], str | None]) -> None:
    # FastAPI >= 0.160 traces by itself, outside the user middleware: its SERVER span starts
    # named by the method alone, and it ends the span at the last body message. Ours adopts
    # that span; this wrapper, around FastAPI's per-request telemetry call, names it at birth
    # and keeps its labels until FastAPI's call returns. Private FastAPI API: when the shape
    # is not the one this was written against, nothing is wrapped (the middleware still
    # adopts and renames the span at routing).
    native = getattr(app, "_native_telemetry", None)
    if native is None or isinstance(native, _NamedNativeTelemetry):
        return
    if not (callable(native) and callable(getattr(native, "enabled", None))):
        return
    app._native_telemetry = _NamedNativeTelemetry(native, find_route)  # type: ignore[attr-defined]


class _NamedNativeTelemetry:
    """FastAPI's ``NativeTelemetry`` with the request's route template known before it starts
    its span (see :class:`span_profiles._core.processor.ServerRoot`)."""

    __slots__ = ("_find_route", "_inner", "_known_methods")

    def __init__(self, inner: Any, find_route: Callable[[Scope], str | None]) -> None:
        self._inner = inner
        self._find_route = find_route
        # FastAPI's span name: the method if it knows it, "HTTP" otherwise, "WS" for websockets.
        self._known_methods: frozenset[str] = frozenset(
            getattr(inner, "_known_methods", None) or ()
        )

    def enabled(self) -> bool:
        """FastAPI's own answer."""
        return bool(self._inner.enabled())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __call__(self, *, scope: Scope, **kwargs: Any) -> None:
        expected = self._expected(scope)
        if expected is None:
            await self._inner(scope=scope, **kwargs)
            return
        token = expected_server_root.set(expected)
        try:
            await self._inner(scope=scope, **kwargs)
        finally:
            expected_server_root.reset(token)
            if expected.holder is not None:
                engine.release(expected.holder)

    def _expected(self, scope: Scope) -> ServerRoot | None:
        try:
            route = self._find_route(scope)
        except Exception:  # the middleware's own lookup logs it and stops using it
            return None
        if route is None:
            return None
        if scope["type"] == "websocket":
            method = "WS"
        else:
            raw = scope.get("method", "")
            method = raw if raw in self._known_methods else "HTTP"
        return ServerRoot(f"{method} {route}", route=route, request=scope)


def route_finder(app: Starlette | Router) -> Callable[[Scope], str | None]:
    """A ``find_route`` for :class:`SpanProfilesMiddleware`: the route template the app's router
    will pick for a scope, found the way the router finds it (first full match, else the first
    partial one, such as a wrong method; into mounted apps and included routers), or ``None``.

    The router still does its own matching; this calls each route's ``matches`` once more
    (``benchmarks/routing.py`` measures it). The list of routes is flattened again whenever
    the app's routes list changes; a route added later to an already included router is found
    only when the router picks it, as without a lookup.
    """
    router = app.router if isinstance(app, Starlette) else app
    flattened = _Flattened(router)

    def find(scope: Scope) -> str | None:
        # Found already for this request by the wrapper around FastAPI's telemetry.
        expected = expected_server_root.get()
        if expected is not None and expected.request is scope:
            return expected.route
        return _match(flattened.candidates(), scope, "")

    return find


_Candidate = tuple[Callable[[Scope], tuple[Match, Scope]], Any]


def _flatten(routes: Sequence[BaseRoute]) -> list[_Candidate]:
    # FastAPI versions that include routers lazily keep one entry per included router; their
    # public iter_route_contexts lists the effective routes, with prefixed paths, in order.
    found = routes if _iter_route_contexts is None else _iter_route_contexts(routes)
    return [(route.matches, route) for route in found]


class _Flattened:
    """A router's candidates, flattened once per change of its routes list (not per request)."""

    __slots__ = ("_candidates", "_key", "_router")

    def __init__(self, router: Router) -> None:
        self._router = router
        self._key: tuple[int, int] | None = None
        self._candidates: list[_Candidate] = []

    def candidates(self) -> list[_Candidate]:
        routes = self._router.routes
        key = (id(routes), len(routes))
        if key != self._key:
            self._candidates = _flatten(routes)
            self._key = key
        return self._candidates


def _match(candidates: list[_Candidate], scope: Scope, prefix: str) -> str | None:
    partial: tuple[Any, Scope] | None = None
    for matches, route in candidates:
        match, child_scope = matches(scope)
        if match is Match.FULL:
            return _template_of(route, {**scope, **child_scope}, prefix)
        if match is Match.PARTIAL and partial is None:
            partial = (route, child_scope)
    if partial is not None:
        return _template_of(partial[0], {**scope, **partial[1]}, prefix)
    return None


def _template_of(route: Any, scope: Scope, prefix: str) -> str | None:
    inner: Any = getattr(route, "routes", None)
    if isinstance(inner, list):
        # A Mount (or Host): the endpoint is one of its routes, matched in the child scope, as
        # the mounted router will. A Mount of a plain app (static files) is named by itself.
        path = getattr(route, "path", "")
        found = _match(_flatten(inner), scope, prefix + (path if isinstance(path, str) else ""))
        if found is not None:
            return found
    template = _route_template(route)
    return None if template is None else prefix + template
