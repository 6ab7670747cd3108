"""The Django ASGI app (and its URLconf) the uvicorn end-to-end test serves."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import PROFILE_ID_ATTRIBUTE
from span_profiles.testing import RecordingSink

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.apps.django_settings")

provider = TracerProvider()
sink = RecordingSink()
span_profiles.instrument(tracer_provider=provider, sink=sink)

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def report() -> JsonResponse:
    """The calling thread's labels, and the current span's id and profile id."""
    span: Any = trace.get_current_span()
    return JsonResponse(
        {
            "labels": sink.current(),
            "span_id": format(span.get_span_context().span_id, "016x"),
            "profile_id": span.attributes.get(PROFILE_ID_ATTRIBUTE),
        }
    )


async def async_item(request: HttpRequest, pk: int) -> JsonResponse:
    """Yield to the other requests, then report."""
    await asyncio.sleep(0.05)
    return report()


def sync_item(request: HttpRequest, pk: int) -> JsonResponse:
    """Report from the asgiref thread the sync view runs in."""
    time.sleep(0.01)
    return report()


urlpatterns = [path("async/<int:pk>", async_item), path("sync/<int:pk>", sync_item)]

application = get_asgi_application()
