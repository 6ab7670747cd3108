"""asgiref's sync_to_async and async_to_sync carry the calling unit's labels."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.labels import Checker, labels_of

asgiref_sync = pytest.importorskip("asgiref.sync")


@pytest.mark.parametrize("thread_sensitive", [True, False])
def test_sync_to_async_jobs_show_the_callers_labels(
    instrumented: Any, thread_sensitive: bool
) -> None:
    """A sync function run through sync_to_async shows the labels of the awaiting request."""
    check = Checker(instrumented.sink)

    async def unit(i: int) -> None:
        with instrumented.tracer.start_as_current_span(f"r{i}") as span:
            own = labels_of(span)
            await asgiref_sync.sync_to_async(check, thread_sensitive=thread_sensitive)(
                own, f"{i} sync_to_async"
            )
            check(own, f"{i} after")

    async def main() -> None:
        await asyncio.gather(*(unit(i) for i in range(30)))

    asyncio.run(main())
    assert check.failures == []
    assert check.count == 60


def test_async_to_sync_inside_sync_to_async(instrumented: Any) -> None:
    """A request hopping sync -> async -> sync (Django's pattern) keeps its labels on each hop."""
    check = Checker(instrumented.sink)

    async def inner(own: dict[str, str], i: int) -> None:
        await asyncio.sleep(0)
        check(own, f"{i} async_to_sync coroutine")
        await asgiref_sync.sync_to_async(check)(own, f"{i} nested sync_to_async")

    def sync_view(i: int) -> None:
        with instrumented.tracer.start_as_current_span(f"view{i}") as span:
            own = labels_of(span)
            check(own, f"{i} sync view")
            asgiref_sync.async_to_sync(inner)(own, i)
            check(own, f"{i} sync view after")

    for i in range(5):
        sync_view(i)
    assert check.failures == []
    assert check.count == 20
