"""FastAPI and Starlette: add :class:`span_profiles.asgi.SpanProfilesMiddleware` to an app.

::

    from span_profiles.fastapi import instrument_app

    app = FastAPI()
    instrument_app(app, scope="root")     # or: app.add_middleware(SpanProfilesMiddleware)

Async and sync endpoints and dependencies, streamed responses and background tasks all run inside
the request's span and carry its labels; ``span_name`` is the route template, e.g.
``GET /items/{item_id}``. Works on asyncio, uvloop and trio (Starlette runs on anyio).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.util.http import get_excluded_urls

from span_profiles import _otel_http, _web
from span_profiles._core.sinks import Sink
from span_profiles.asgi import SpanProfilesMiddleware

try:
    from starlette.applications import Starlette
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.fastapi needs Starlette (FastAPI brings it). "
        "Install it with: pip install 'span-profiles[fastapi]'"
    ) from exc

__all__ = ["SpanProfilesMiddleware", "instrument_app"]


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
    ``meter_provider``...); ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` is read as FastAPI's
    instrumentation reads it. They are validated now, so a bad value raises
    :class:`span_profiles.SettingsError` here rather than on the first request. Calling it again
    on the same app changes nothing.
    """
    if any(m.cls is SpanProfilesMiddleware for m in app.user_middleware):
        return app
    # Resolved now, because Starlette builds the middleware stack only on the first request.
    explicit, _, otel_options = _otel_http.split_options("asgi", options)
    settings = _web.resolve_settings(None, explicit)
    if "excluded_urls" not in otel_options:
        otel_options["excluded_urls"] = get_excluded_urls("FASTAPI")
    app.add_middleware(
        SpanProfilesMiddleware,
        tracer_provider=tracer_provider,
        sink=sink,
        settings=settings,
        **otel_options,
    )
    return app
