"""SpanProfilesProcessor registered alone, as pyroscope-otel's README sets up its processor.

No ``instrument()`` call: the processor installs the runtime hooks at its first local root span,
sends labels to the default sink (the agent's when pyroscope-io is importable) and removes the
hooks again when its provider shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

# The nox `core` session has no anyio (it runs tests/core with no extra); every other session does.
pytest.importorskip("anyio")

import anyio
import anyio.to_thread
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import SpanProfilesProcessor
from span_profiles._core import engine
from span_profiles.testing import RecordingSink
from tests.support.labels import Checker, labels_of


class Alone:
    """A provider with only our processor on it, and the sink ``default_sink()`` hands out."""

    def __init__(self, provider: TracerProvider, processor: SpanProfilesProcessor) -> None:
        self.provider = provider
        self.processor = processor
        self.sink = RecordingSink()
        self.tracer = provider.get_tracer("alone")


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Alone]:
    """``provider.add_span_processor(SpanProfilesProcessor())`` and nothing else."""
    span_profiles.uninstrument()
    provider = TracerProvider()
    processor = SpanProfilesProcessor()
    provider.add_span_processor(processor)
    setup = Alone(provider, processor)
    monkeypatch.setattr("span_profiles._instrument.default_sink", lambda: setup.sink)
    try:
        yield setup
    finally:
        provider.shutdown()
        span_profiles.uninstrument()


@pytest.mark.anyio
async def test_alone_it_labels_every_step_and_worker_thread(alone: Alone, backend_id: str) -> None:
    """Concurrent roots under each backend see only their own labels, in threads too."""
    assert not span_profiles.is_instrumented()
    check = Checker(alone.sink)
    if backend_id.startswith("uvloop"):
        # A running uvloop loop is hooked at the first root (a task factory): tasks it created
        # before are not covered, as with instrument() called in a running loop. The units
        # below are created after a first request has been served.
        with alone.tracer.start_as_current_span("first request"):
            await anyio.sleep(0)

    async def unit(i: int) -> None:
        with alone.tracer.start_as_current_span(f"alone-{i}") as span:
            own = labels_of(span)
            check(own, f"{i} start")
            for k in range(3):
                await anyio.sleep(0)
                check(own, f"{i} step {k}")
            await anyio.to_thread.run_sync(check, own, f"{i} anyio worker thread")
            if backend_id != "trio":
                await asyncio.to_thread(check, own, f"{i} asyncio.to_thread")
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, check, own, f"{i} run_in_executor")
            check(own, f"{i} end")

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(unit, i)
    assert span_profiles.is_instrumented()
    assert check.failures == []
    assert check.count >= 40 * 6


def test_its_provider_shutdown_removes_the_hooks(alone: Alone) -> None:
    """The hooks the processor installed go with it: every patched object is restored."""
    original = asyncio.events.Handle.__dict__["_run"]
    with alone.tracer.start_as_current_span("first"):
        assert span_profiles.is_instrumented()
        assert asyncio.events.Handle.__dict__["_run"] is not original
    alone.provider.shutdown()
    assert not span_profiles.is_instrumented()
    assert asyncio.events.Handle.__dict__["_run"] is original
    assert engine.installed is None


def test_instrument_after_it_returns_the_processor_in_effect(alone: Alone) -> None:
    """A later instrument() (e.g. an adapter's lazy start) adds no second processor."""
    with alone.tracer.start_as_current_span("first"):
        pass
    assert span_profiles.instrument() is alone.processor


def test_a_sink_set_before_first_use_is_kept(alone: Alone) -> None:
    """A sink chosen before the first root span is the one the installation uses."""
    mine = RecordingSink()
    engine.set_sink(mine)
    with alone.tracer.start_as_current_span("first") as span:
        assert mine.current() == labels_of(span)
    assert alone.sink.history == []


def test_without_hooks_it_still_takes_the_default_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    """install_hooks=False installs nothing but still labels the starting thread via the agent."""
    span_profiles.uninstrument()
    sink = RecordingSink()
    monkeypatch.setattr("span_profiles._instrument.default_sink", lambda: sink)
    provider = TracerProvider()
    provider.add_span_processor(SpanProfilesProcessor(install_hooks=False))
    try:
        with provider.get_tracer("t").start_as_current_span("r") as span:
            assert not span_profiles.is_instrumented()
            assert sink.current() == labels_of(span)
        assert sink.current() == {}
    finally:
        provider.shutdown()
        engine.reset_state()


@pytest.mark.agent
def test_alone_it_uses_the_pyroscope_agent_sink() -> None:
    """With pyroscope-io importable, the default sink is the agent's."""
    span_profiles.uninstrument()
    provider = TracerProvider()
    provider.add_span_processor(SpanProfilesProcessor())
    try:
        with provider.get_tracer("t").start_as_current_span("r"):
            assert isinstance(engine.current_sink(), span_profiles.PyroscopeSink)
    finally:
        provider.shutdown()
    assert not span_profiles.is_instrumented()


def test_trace_id_stays_off_by_default_unlike_pyroscope_otel(alone: Alone) -> None:
    """The default labels are span_id and span_name; trace_id=True adds pyroscope-otel's third."""
    with alone.tracer.start_as_current_span("r") as span:
        assert set(alone.sink.current()) == {"span_id", "span_name"}
    traced = SpanProfilesProcessor(trace_id=True)
    assert dict(traced.make_labels(span))["trace_id"] == format(
        span.get_span_context().trace_id, "032x"
    )
