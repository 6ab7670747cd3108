"""A middleware telling the client which span served it (``x-span-id``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware
from opentelemetry import trace


def current_span_id() -> str:
    """The current span's id as 16 hex digits: the ``span_id`` label of the request's samples."""
    return format(trace.get_current_span().get_span_context().span_id, "016x")


@sync_and_async_middleware
def span_id_header(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Add ``x-span-id``; it runs inside span-profiles' middleware, where the span is current."""
    if iscoroutinefunction(get_response):
        async_get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = get_response

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            span_id = current_span_id()
            response = await async_get_response(request)
            response["x-span-id"] = span_id
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        span_id = current_span_id()
        response: HttpResponseBase = get_response(request)
        response["x-span-id"] = span_id
        return response

    return middleware
