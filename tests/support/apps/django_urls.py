"""URLconf for the Django tests: sync and async views that probe their labels."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import include, path

probe: Callable[[str], None] = lambda where: None  # noqa: E731
"""Set by each test to its Probe."""


def set_probe(new: Callable[[str], None]) -> None:
    """Route the views' checkpoints to ``new``."""
    global probe
    probe = new


class ProbingMiddleware:
    """A middleware after ours: app code that runs before Django resolves the URL."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        probe("middleware before routing")
        return self.get_response(request)


def sync_item(request: HttpRequest, pk: int) -> HttpResponse:
    """A sync view."""
    probe("sync view")
    return JsonResponse({"pk": pk, "thread": threading.get_ident()})


async def async_item(request: HttpRequest, pk: int) -> HttpResponse:
    """An async view with checkpoints around awaits."""
    probe("async view")
    await asyncio.sleep(0)
    probe("async view after sleep(0)")
    await asyncio.sleep(0.001)
    probe("async view after sleep(0.001)")
    return JsonResponse({"pk": pk})


def sync_stream(request: HttpRequest) -> HttpResponse:
    """A streaming response from a sync generator."""

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            probe(f"sync chunk {i}")
            yield b"x"

    return StreamingHttpResponse(chunks())


async def async_stream(request: HttpRequest) -> HttpResponse:
    """A streaming response from an async generator."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0)
            probe(f"async chunk {i}")
            yield b"x"

    return StreamingHttpResponse(chunks())


def boom(request: HttpRequest) -> HttpResponse:
    """A view that fails."""
    raise RuntimeError("boom")


def root(request: HttpRequest) -> HttpResponse:
    """The site root."""
    probe("root")
    return HttpResponse("root")


api: list[Any] = [path("things/<slug:slug>/", lambda request, slug: HttpResponse(slug))]

urlpatterns = [
    path("", root),
    path("items/<int:pk>", sync_item),
    path("async-items/<int:pk>", async_item),
    path("stream", sync_stream),
    path("async-stream", async_stream),
    path("boom", boom),
    path("api/", include(api)),
]
