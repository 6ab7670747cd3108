"""The label oracle: 100+ concurrent units, a checkpoint after every await, yield and thread hop.

Every checkpoint asserts that the calling thread shows exactly the labels of the unit running there.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.support.backends import ASYNCIO_BACKENDS, TRIO_BACKENDS
from tests.support.labels import Checker, labels_of

pytestmark = pytest.mark.anyio

UNITS = 120


async def _agen(check: Checker, own: dict[str, str], where: str) -> AsyncIterator[int]:
    for i in range(3):
        await anyio.sleep(0)
        check(own, f"{where} agen before yield {i}")
        yield i
        check(own, f"{where} agen after yield {i}")


async def _sub(check: Checker, own: dict[str, str], where: str) -> None:
    for k in range(3):
        await anyio.sleep(0)
        check(own, f"{where} subtask step {k}")


async def _portable_unit(i: int, tracer: Any, check: Checker) -> None:
    check({}, f"unit {i} before span")
    with tracer.start_as_current_span(f"unit-{i}") as span:
        own = labels_of(span)
        check(own, f"unit {i} start")
        for k in range(3):
            await anyio.sleep(0)
            check(own, f"unit {i} after sleep {k}")
        with tracer.start_as_current_span("child"):
            await anyio.sleep(0)
            check(own, f"unit {i} in child span")
        check(own, f"unit {i} after child span")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sub, check, own, f"unit {i} tg1")
            tg.start_soon(_sub, check, own, f"unit {i} tg2")
            await anyio.sleep(0)
            check(own, f"unit {i} inside task group")
        check(own, f"unit {i} after task group")

        def in_thread(step: str) -> None:
            check(own, f"unit {i} anyio thread {step}")

        await anyio.to_thread.run_sync(in_thread, "a")
        check(own, f"unit {i} after thread hop")
        async for _ in _agen(check, own, f"unit {i}"):
            check(own, f"unit {i} async for body")
            await anyio.sleep(0)
        check(own, f"unit {i} end")
    check({}, f"unit {i} after span ended")
    await anyio.sleep(0)
    check({}, f"unit {i} after span, next step")


async def _no_span_unit(i: int, check: Checker) -> None:
    for k in range(5):
        await anyio.sleep(0)
        check({}, f"spanless unit {i} step {k}")
        await anyio.to_thread.run_sync(check, {}, f"spanless unit {i} thread {k}")


async def test_every_checkpoint_shows_its_own_labels(instrumented: Any) -> None:
    """120 concurrent root spans, plus spanless units, each see only their own labels everywhere."""
    check = Checker(instrumented.sink)
    async with anyio.create_task_group() as tg:
        for i in range(UNITS):
            tg.start_soon(_portable_unit, i, instrumented.tracer, check)
        for i in range(10):
            tg.start_soon(_no_span_unit, i, check)
    assert check.failures == []
    assert check.count > UNITS * 20
    assert instrumented.sink.current() == {}


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_asyncio_apis(instrumented: Any) -> None:
    """create_task, gather, TaskGroup, wait_for, shield, to_thread and executors keep labels."""
    import asyncio
    import concurrent.futures

    check = Checker(instrumented.sink)
    tracer = instrumented.tracer
    user_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    async def child(own: dict[str, str], where: str) -> int:
        await asyncio.sleep(0)
        check(own, f"{where} child")
        await asyncio.sleep(0)
        check(own, f"{where} child 2")
        return 1

    async def unit(i: int) -> None:
        loop = asyncio.get_running_loop()
        with tracer.start_as_current_span(f"asyncio-{i}") as span:
            own = labels_of(span)
            await asyncio.create_task(child(own, f"{i} create_task"))
            check(own, f"{i} after create_task")
            await asyncio.gather(child(own, f"{i} gather a"), child(own, f"{i} gather b"))
            check(own, f"{i} after gather")
            if sys.version_info >= (3, 11):
                async with asyncio.TaskGroup() as group:
                    group.create_task(child(own, f"{i} TaskGroup"))
                    group.create_task(child(own, f"{i} TaskGroup 2"))
                check(own, f"{i} after TaskGroup")
            await asyncio.wait_for(child(own, f"{i} wait_for"), timeout=10)
            check(own, f"{i} after wait_for")
            await asyncio.shield(child(own, f"{i} shield"))
            check(own, f"{i} after shield")
            await asyncio.to_thread(check, own, f"{i} asyncio.to_thread")
            check(own, f"{i} after to_thread")
            await loop.run_in_executor(None, check, own, f"{i} run_in_executor default")
            await loop.run_in_executor(user_pool, check, own, f"{i} run_in_executor user pool")
            await asyncio.wrap_future(user_pool.submit(check, own, f"{i} pool.submit"))
            check(own, f"{i} end")
        await asyncio.sleep(0)
        check({}, f"{i} after end")

    try:
        await asyncio.gather(*(unit(i) for i in range(UNITS)))
    finally:
        user_pool.shutdown(wait=True)
    assert check.failures == []
    assert check.count >= UNITS * 15


async def test_worker_threads_carry_no_labels_after_the_job(
    instrumented: Any, backend_id: str
) -> None:
    """A worker thread that ran a labelled job holds no labels once the job returned."""
    import threading

    seen: list[int] = []

    def job() -> int:
        seen.append(threading.get_ident())
        return threading.get_ident()

    with instrumented.tracer.start_as_current_span("req"):
        await anyio.to_thread.run_sync(job)
    if backend_id != "trio":
        import asyncio

        with instrumented.tracer.start_as_current_span("req2"):
            await asyncio.to_thread(job)
            await asyncio.get_running_loop().run_in_executor(None, job)
    await anyio.sleep(0)
    for tid in seen:
        assert instrumented.sink.current(tid) == {}, tid


@pytest.mark.parametrize("anyio_backend", TRIO_BACKENDS)
async def test_trio_native_apis(instrumented: Any) -> None:
    """trio nurseries and trio.to_thread.run_sync keep labels on every step."""
    import trio

    check = Checker(instrumented.sink)

    async def child(own: dict[str, str], where: str) -> None:
        for k in range(3):
            await trio.sleep(0)
            check(own, f"{where} {k}")

    async def unit(i: int) -> None:
        with instrumented.tracer.start_as_current_span(f"trio-{i}") as span:
            own = labels_of(span)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, own, f"{i} nursery a")
                nursery.start_soon(child, own, f"{i} nursery b")
            check(own, f"{i} after nursery")
            await trio.to_thread.run_sync(check, own, f"{i} trio.to_thread")
            check(own, f"{i} after thread")
        await trio.sleep(0)
        check({}, f"{i} after end")

    async with trio.open_nursery() as nursery:
        for i in range(UNITS):
            nursery.start_soon(unit, i)
    assert check.failures == []
    assert check.count >= UNITS * 9


async def test_agent_calls_are_changes_and_the_loop_idles_unlabelled(instrumented: Any) -> None:
    """A task stepping 100 times under one span: every agent call changes what the thread
    shows (no pair added twice, none removed that is not there), and once the loop is between
    steps again nothing is left on the thread."""
    sink = instrumented.sink
    async with anyio.create_task_group() as tg:

        async def alone() -> None:
            sink.reset()
            with instrumented.tracer.start_as_current_span("steady"):
                for _ in range(100):
                    await anyio.sleep(0)

        tg.start_soon(alone)
    await anyio.sleep(0)
    shown: set[tuple[str, str]] = set()
    for event in sink.history:
        pair = (event.key, event.value)
        if event.op == "add":
            assert pair not in shown, event
            shown.add(pair)
        else:
            assert pair in shown, event
            shown.discard(pair)
    assert shown == set()
    assert {event.key for event in sink.history} == {"span_id", "span_name"}
