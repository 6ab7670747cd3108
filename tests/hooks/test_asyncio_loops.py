"""asyncio specifics: tasks from before instrument(), user task factories, uvloop (eager tasks:
test_eager_tasks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles._hooks.asyncio import StepCoroutine
from span_profiles.testing import RecordingSink
from tests.support.labels import Checker, labels_of


async def _preexisting_unit(
    started: asyncio.Event, tracer_box: list[Any], check: Checker, i: int
) -> None:
    await started.wait()
    tracer = tracer_box[0]
    with tracer.start_as_current_span(f"old-{i}") as span:
        own = labels_of(span)
        for k in range(5):
            await asyncio.sleep(0)
            check(own, f"pre-existing {i} step {k}")
    await asyncio.sleep(0)
    check({}, f"pre-existing {i} after")


def test_tasks_created_before_instrument_are_labelled() -> None:
    """Tasks that existed before instrument() show their own labels on every later step."""
    provider, sink = TracerProvider(), RecordingSink()
    check = Checker(sink)
    tracer_box: list[Any] = []

    async def main() -> None:
        started = asyncio.Event()
        tasks = [
            asyncio.create_task(_preexisting_unit(started, tracer_box, check, i)) for i in range(50)
        ]
        await asyncio.sleep(0)
        span_profiles.instrument(tracer_provider=provider, sink=sink)
        tracer_box.append(provider.get_tracer("t"))
        started.set()
        await asyncio.gather(*tasks)

    span_profiles.uninstrument()
    try:
        asyncio.run(main())
    finally:
        span_profiles.uninstrument()
    assert check.failures == []
    assert check.count == 300


def _uvloop() -> Any:
    return pytest.importorskip("uvloop")


@pytest.mark.parametrize("instrument_first", [False, True], ids=["factory-first", "hook-first"])
def test_uvloop_chains_to_the_users_task_factory(instrument_first: bool) -> None:
    """On uvloop our factory wraps coroutines and still goes through the user's own factory,
    whether the user's was there first (we chain onto it) or was set on a loop already hooked
    at construction (it goes under ours instead of replacing it); uninstrument() leaves it."""
    uv = _uvloop()
    provider, sink = TracerProvider(), RecordingSink()
    created: list[Any] = []
    check = Checker(sink)

    def user_factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    async def unit(tracer: Any, i: int) -> None:
        with tracer.start_as_current_span(f"u-{i}") as span:
            own = labels_of(span)
            for k in range(3):
                await asyncio.sleep(0)
                check(own, f"uvloop {i} step {k}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(user_factory)
        span_profiles.instrument(tracer_provider=provider, sink=sink)  # hooks it, or idempotent
        assert loop.get_task_factory() is not user_factory
        span_profiles.instrument(tracer_provider=provider, sink=sink)  # idempotent
        tracer = provider.get_tracer("t")
        await asyncio.gather(*(loop.create_task(unit(tracer, i)) for i in range(20)))
        span_profiles.uninstrument()
        assert loop.get_task_factory() is user_factory

    span_profiles.uninstrument()
    if instrument_first:
        span_profiles.instrument(tracer_provider=provider, sink=sink)
    try:
        uv.run(main())
    finally:
        span_profiles.uninstrument()
    assert check.failures == []
    assert check.count == 60
    assert len(created) >= 20
    assert all(isinstance(task.get_coro(), StepCoroutine) for task in created[:20])


def test_uvloop_created_after_instrument_covers_its_first_task() -> None:
    """A uvloop loop created after instrument() labels even the task that runs main()."""
    uv = _uvloop()
    provider, sink = TracerProvider(), RecordingSink()
    check = Checker(sink)
    span_profiles.uninstrument()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    tracer = provider.get_tracer("t")

    async def unit(i: int) -> None:
        with tracer.start_as_current_span(f"u-{i}") as span:
            own = labels_of(span)
            for k in range(3):
                await asyncio.sleep(0)
                check(own, f"{i} {k}")

    async def main() -> None:
        await asyncio.gather(*(unit(i) for i in range(30)))

    try:
        uv.run(main())
    finally:
        span_profiles.uninstrument()
    assert check.failures == []
    assert check.count == 90
