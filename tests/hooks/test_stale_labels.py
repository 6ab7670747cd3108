"""Stale labels never survive: no span, ended spans, spans ended elsewhere, exited threads."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from tests.support.labels import labels_of

pytestmark = pytest.mark.anyio


async def test_no_span_gives_no_labels(instrumented: Any) -> None:
    """A task with no span shows no labels even right after a labelled task ran."""
    seen: list[dict[str, str]] = []

    async def labelled() -> None:
        with instrumented.tracer.start_as_current_span("busy"):
            for _ in range(5):
                await anyio.sleep(0)

    async def spanless() -> None:
        for _ in range(5):
            await anyio.sleep(0)
            seen.append(instrumented.sink.current())

    async with anyio.create_task_group() as tg:
        tg.start_soon(labelled)
        tg.start_soon(spanless)
    assert seen
    assert all(labels == {} for labels in seen)


async def test_ended_span_gives_no_labels_while_still_current(instrumented: Any) -> None:
    """A span ended by hand but still current in the context gives no labels from then on."""
    span = instrumented.tracer.start_span("manual")
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        assert instrumented.sink.current() == labels_of(span)
        span.end()
        assert instrumented.sink.current() == {}
        await anyio.sleep(0)
        assert instrumented.sink.current() == {}
    finally:
        otel_context.detach(token)


async def test_span_ended_on_another_thread(instrumented: Any) -> None:
    """A span ended on a worker thread leaves no labels on the thread that started it."""
    with instrumented.tracer.start_as_current_span("req", end_on_exit=False) as span:
        assert instrumented.sink.current() == labels_of(span)
        await anyio.to_thread.run_sync(span.end)
        await anyio.sleep(0)
        assert instrumented.sink.current() == {}


def test_thread_exiting_with_labels_leaves_none(instrumented: Any) -> None:
    """A thread that exits with a span still attached leaves no labels behind for its ident."""
    idents: list[int] = []

    def leak() -> None:
        span = instrumented.tracer.start_span("leaky")
        otel_context.attach(trace.set_span_in_context(span))
        idents.append(threading.get_ident())
        assert instrumented.sink.current() == labels_of(span)

    thread = threading.Thread(target=leak)
    thread.start()
    thread.join()
    assert idents
    assert instrumented.sink.current(idents[0]) == {}


def test_reused_thread_ident_starts_with_no_labels(instrumented: Any) -> None:
    """A new thread reusing the ident of a thread that leaked labels starts with none."""
    leaked: list[int] = []
    done = threading.Event()

    def raw_thread() -> None:
        # _thread.start_new_thread bypasses threading's exit hook: the labels really leak.
        span = instrumented.tracer.start_span("leaky")
        otel_context.attach(trace.set_span_in_context(span))
        leaked.append(threading.get_ident())
        done.set()

    _thread.start_new_thread(raw_thread, ())
    assert done.wait(5)
    time.sleep(0.05)  # let the raw thread finish exiting so its ident can be reused
    assert instrumented.sink.current(leaked[0]) != {}
    observed: list[tuple[int, dict[str, str]]] = []
    for _ in range(20):
        thread = threading.Thread(
            target=lambda: observed.append((threading.get_ident(), instrumented.sink.current()))
        )
        thread.start()
        thread.join()
        if observed[-1][0] == leaked[0]:
            break
    reused = [labels for ident, labels in observed if ident == leaked[0]]
    if not reused:
        pytest.skip("the C library did not reuse the thread ident")
    assert reused[0] == {}
