"""The example's views: async and sync, child tasks, a thread-pool call, CPU in named functions.

* ``GET /checkout`` (async): ``burn_checkout`` on the event loop, then line items priced in
  ``burn_pricing`` by child tasks (``asyncio.gather``).
* ``GET /search`` (sync): ``burn_search`` (under ASGI, Django runs it on a worker thread).
* ``GET /report`` (async): hands ``render_report`` to the thread pool (``run_in_executor``).
* ``GET /items/<int:item_id>`` (async): no CPU to speak of; shows a URL pattern as span name.

Under WSGI (gunicorn) Django runs the async views in an event loop of their own per request; the
labels follow them there too.
"""

from __future__ import annotations

import asyncio
import os
import time

from django.http import HttpRequest, JsonResponse

DEFAULT_MS = 150
"""A CPU-heavy request burns long enough for a 100 Hz sampler to see it several times."""
MAX_MS = 2000
SLICE_MS = 10
"""The event loop gets control back this often inside a burning async view."""


# One function per kind of work: a profile shows the function, so they must not share a name.
# They burn the calling thread's CPU time (not wall time), so that a request gets its share of
# samples however many other requests compete for the GIL.
def burn_checkout(ms: float) -> int:
    """Validate a cart: the checkout view's own CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total


def burn_pricing(ms: float) -> int:
    """Price one line item: the CPU of checkout's child tasks."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i % 7
    return total


def burn_search(ms: float) -> int:
    """Rank search results: the search view's CPU."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i ^ 5
    return total


def render_report(ms: float) -> int:
    """Render a report: the CPU the report view hands to the thread pool."""
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i | 3
    return total


def requested_ms(request: HttpRequest) -> int:
    """The ``ms`` query parameter (CPU milliseconds to burn), bounded."""
    try:
        ms = int(request.GET.get("ms", DEFAULT_MS))
    except ValueError:
        ms = DEFAULT_MS
    return max(1, min(ms, MAX_MS))


def health(request: HttpRequest) -> JsonResponse:
    """Liveness probe; no CPU. ``pid`` tells which worker answered."""
    return JsonResponse({"status": "ok", "pid": os.getpid()})


async def checkout(request: HttpRequest) -> JsonResponse:
    """Burn in ``burn_checkout`` in slices, then price two line items in child tasks."""
    ms = requested_ms(request)
    own = ms * 2 // 3
    done = 0
    while done < own:
        step = min(SLICE_MS, own - done)
        burn_checkout(step)
        done += step
        await asyncio.sleep(0)  # let the other requests run: labels must follow the tasks

    async def price_line_item() -> int:
        total = 0
        for _ in range(2):
            total += burn_pricing((ms - own) / 4)
            await asyncio.sleep(0)
        return total

    lines = await asyncio.gather(*(asyncio.create_task(price_line_item()) for _ in range(2)))
    return JsonResponse({"endpoint": "checkout", "lines": len(lines)})


def search(request: HttpRequest) -> JsonResponse:
    """A sync view: burn in ``burn_search``."""
    burn_search(requested_ms(request))
    return JsonResponse({"endpoint": "search", "query": request.GET.get("q", "shoes")})


async def report(request: HttpRequest) -> JsonResponse:
    """Hand ``render_report`` to the loop's thread pool and await it."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, render_report, requested_ms(request))
    return JsonResponse({"endpoint": "report"})


async def item(request: HttpRequest, item_id: int) -> JsonResponse:
    """A cheap view; its span (and label) name is the pattern ``GET items/<int:item_id>``."""
    return JsonResponse({"endpoint": "items", "item_id": item_id})
