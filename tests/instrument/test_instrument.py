"""instrument()/uninstrument(): idempotent, reversible, and never breaking the app."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Span, TracerProvider

import span_profiles
from span_profiles import Labels
from span_profiles._core import engine
from span_profiles.testing import RecordingSink

try:
    from anyio import to_thread as anyio_to_thread
except ImportError:  # the `core` nox session installs no extra: the anyio hook patches nothing
    anyio_to_thread = None  # type: ignore[assignment]


def _patched_objects() -> dict[str, Any]:
    objects: dict[str, Any] = {
        "Handle._run": asyncio.events.Handle.__dict__["_run"],
        "BaseEventLoop.create_task": asyncio.base_events.BaseEventLoop.__dict__["create_task"],
        "ThreadPoolExecutor.submit": ThreadPoolExecutor.__dict__["submit"],
        "Thread._bootstrap_inner": threading.Thread.__dict__["_bootstrap_inner"],
        "runtime context": otel_context._RUNTIME_CONTEXT,
        "Span.update_name": Span.__dict__["update_name"],
    }
    if anyio_to_thread is not None:
        objects["anyio.to_thread.run_sync"] = anyio_to_thread.run_sync
    return objects


def test_uninstrument_restores_exactly_what_was_patched() -> None:
    """Every patched object is the original one again after uninstrument()."""
    span_profiles.uninstrument()
    before = _patched_objects()
    span_profiles.instrument(tracer_provider=TracerProvider(), sink=RecordingSink())
    during = _patched_objects()
    assert all(during[name] is not before[name] for name in before), during
    span_profiles.uninstrument()
    after = _patched_objects()
    assert all(after[name] is before[name] for name in before)
    assert not span_profiles.is_instrumented()


def test_instrument_twice_changes_nothing() -> None:
    """A second instrument() returns the same processor and adds no second processor or patch."""
    span_profiles.uninstrument()
    provider = TracerProvider()
    try:
        first = span_profiles.instrument(tracer_provider=provider, sink=RecordingSink())
        patched = _patched_objects()
        second = span_profiles.instrument(tracer_provider=provider, scope="all")
        assert second is first
        assert _patched_objects() == patched
        processors = provider._active_span_processor._span_processors
        assert processors.count(first) == 1
    finally:
        span_profiles.uninstrument()
    assert first not in provider._active_span_processor._span_processors


def test_uninstrument_clears_the_calling_threads_labels() -> None:
    """Labels applied on the calling thread are removed by uninstrument()."""
    span_profiles.uninstrument()
    provider, sink = TracerProvider(), RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("open"):
        assert sink.current() != {}
        span_profiles.uninstrument()
        assert sink.current() == {}


class _BrokenSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def apply(self, labels: Labels, /) -> None:
        self.calls += 1
        raise RuntimeError("agent exploded")


def test_failing_sink_is_logged_once_and_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    """A sink that raises never reaches the app: one log record, then no more calls."""
    span_profiles.uninstrument()
    provider, sink = TracerProvider(), _BrokenSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    tracer = provider.get_tracer("t")
    caplog.set_level(logging.ERROR, logger="span_profiles")
    try:

        async def main() -> int:
            total = 0
            for i in range(5):
                with tracer.start_as_current_span(f"r{i}"):
                    await asyncio.sleep(0)
                    total += 1
            return total

        assert asyncio.run(main()) == 5
    finally:
        span_profiles.uninstrument()
    assert sink.calls == 1
    records = [r for r in caplog.records if "label sink" in r.getMessage()]
    assert len(records) == 1


class _ExplodingHolder:
    @property
    def labels(self) -> Labels:
        raise RuntimeError("hook bug")


def test_failing_step_hook_is_logged_once_and_removed(caplog: pytest.LogCaptureFixture) -> None:
    """An asyncio step hook that raises is logged once and unpatched; the loop keeps running."""
    span_profiles.uninstrument()
    original_run = asyncio.events.Handle.__dict__["_run"]
    provider = TracerProvider()
    span_profiles.instrument(tracer_provider=provider, sink=RecordingSink())
    tracer = provider.get_tracer("t")
    caplog.set_level(logging.ERROR, logger="span_profiles")
    try:

        async def main() -> int:
            with tracer.start_as_current_span("r") as span:
                engine.holders[span] = _ExplodingHolder()  # type: ignore[assignment]
                done = 0
                for _ in range(5):
                    await asyncio.sleep(0)
                    done += 1
                return done

        assert asyncio.run(main()) == 5
        assert asyncio.events.Handle.__dict__["_run"] is original_run
    finally:
        span_profiles.uninstrument()
    records = [r for r in caplog.records if "asyncio step hook" in r.getMessage()]
    assert len(records) == 1
