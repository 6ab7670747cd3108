"""The Django app of the routing e2e test: CPU burnt in a middleware, before Django resolves.

Served as ``application`` (WSGI, gunicorn) or ``asgi_application`` (ASGI, uvicorn).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.apps.django_routing_settings")

SERVICE_NAME = "e2e-django-routing"
trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME})))

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from tests.support.cpu import burn_cpu  # noqa: E402


def burn_session_middleware(ms: float) -> int:
    """A session or auth middleware's CPU: it runs before Django resolves the URL."""
    return burn_cpu(ms)


def burn_view(ms: float) -> int:
    """The view's own CPU."""
    return burn_cpu(ms)


class SlowSessionMiddleware:
    """Loads a session the slow way, then tells the client which span served it."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        burn_session_middleware(25)
        response = self.get_response(request)
        span_id = trace.get_current_span().get_span_context().span_id
        response["x-span-id"] = format(span_id, "016x")
        return response


def health(request: HttpRequest) -> HttpResponse:
    """Which worker answered."""
    return JsonResponse({"pid": os.getpid()})


def item(request: HttpRequest, pk: int) -> HttpResponse:
    """Burn in the view."""
    burn_view(25)
    return JsonResponse({"pk": pk})


def order(request: HttpRequest, name: str) -> HttpResponse:
    """Burn in another view."""
    burn_view(25)
    return JsonResponse({"order": name})


urlpatterns = [
    path("health", health),
    path("items/<int:pk>", item),
    path("orders/<slug:name>/", order),
]

application = get_wsgi_application()
asgi_application = get_asgi_application()
