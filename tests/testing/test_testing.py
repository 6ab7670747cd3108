"""span_profiles.testing for users' tests: recording() installs and undoes; the label checkpoint."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext

import span_profiles
from span_profiles.testing import RecordingSink, assert_labels_of, labels_of, recording


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A fresh SDK provider, with nothing instrumented before or after the test."""
    span_profiles.uninstrument()
    provider = TracerProvider()
    yield provider
    span_profiles.uninstrument()
    provider.shutdown()


def test_recording_instruments_for_the_block_only(provider: TracerProvider) -> None:
    """Inside the block the sink gets the span's labels; after it nothing is installed."""
    tracer = provider.get_tracer(__name__)
    with recording(tracer_provider=provider) as sink:
        assert span_profiles.is_instrumented()
        with tracer.start_as_current_span("GET /items") as span:
            assert sink.current() == labels_of(span)
        assert sink.current() == {}
    assert not span_profiles.is_instrumented()
    with tracer.start_as_current_span("after"):
        assert sink.current() == {}
    assert [e.op for e in sink.history] == ["add", "add", "remove", "remove"]


def test_recording_undoes_itself_when_the_block_raises(provider: TracerProvider) -> None:
    """An exception in the block still leaves span-profiles uninstrumented."""
    with pytest.raises(KeyError), recording(tracer_provider=provider):
        raise KeyError("boom")
    assert not span_profiles.is_instrumented()


def test_recording_refuses_to_replace_an_installed_sink(provider: TracerProvider) -> None:
    """Already instrumented: a clear error, and the installed sink keeps getting the labels."""
    installed = RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=installed)
    with (
        pytest.raises(RuntimeError, match=r"already instrumented.*uninstrument\(\)"),
        recording(tracer_provider=provider),
    ):
        pass  # pragma: no cover - never entered
    assert span_profiles.is_instrumented()
    with provider.get_tracer(__name__).start_as_current_span("still") as span:
        assert installed.current() == labels_of(span)


def test_recording_passes_the_options_on(provider: TracerProvider) -> None:
    """span_name=False and trace_id=True reach instrument()."""
    tracer = provider.get_tracer(__name__)
    with (
        recording(tracer_provider=provider, span_name=False, trace_id=True) as sink,
        tracer.start_as_current_span("root") as span,
    ):
        assert sink.current() == labels_of(span, span_name=False, trace_id=True)
        assert set(sink.current()) == {"span_id", "trace_id"}
        assert_labels_of(span)


@pytest.mark.anyio
async def test_checkpoint_passes_in_tasks_and_worker_threads(provider: TracerProvider) -> None:
    """The span's labels are there in a child task and in a worker thread it starts."""
    import anyio
    import anyio.to_thread

    tracer = provider.get_tracer(__name__)
    seen: list[str] = []

    def in_thread(span: trace.Span) -> None:
        assert_labels_of(span)
        seen.append("thread")

    async def child(span: trace.Span) -> None:
        await anyio.sleep(0)
        assert_labels_of(span)
        await anyio.to_thread.run_sync(in_thread, span)
        seen.append("task")

    with recording(tracer_provider=provider), tracer.start_as_current_span("root") as span:
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, span)
            tg.start_soon(child, span)
    assert sorted(seen) == ["task", "task", "thread", "thread"]


def test_checkpoint_names_both_spans_when_the_labels_are_another_spans(
    provider: TracerProvider,
) -> None:
    """Under scope='root' a child's work carries the root's labels; asking for the child's fails."""
    tracer = provider.get_tracer(__name__)
    with (
        recording(tracer_provider=provider),
        tracer.start_as_current_span("root") as root,
        tracer.start_as_current_span("child") as child,
    ):
        assert_labels_of(root)
        with pytest.raises(AssertionError) as failure:
            assert_labels_of(child)
    message = str(failure.value)
    assert labels_of(root)["span_id"] in message
    assert labels_of(child)["span_id"] in message
    assert "'child'" in message


def test_checkpoint_without_labels_says_so(provider: TracerProvider) -> None:
    """Outside the span's context the message says there are no labels at all, and why."""
    tracer = provider.get_tracer(__name__)
    with recording(tracer_provider=provider):
        with tracer.start_as_current_span("root") as span:
            pass
        with pytest.raises(AssertionError, match=r"no labels on thread \d+.*span's context"):
            assert_labels_of(span)


def test_checkpoint_checks_the_span_name_it_is_given(provider: TracerProvider) -> None:
    """span_name= must match the label; the label follows a renamed span."""
    tracer = provider.get_tracer(__name__)
    with recording(tracer_provider=provider), tracer.start_as_current_span("GET") as span:
        with pytest.raises(AssertionError, match=re.escape("'span_name': 'GET /items/{id}'")):
            assert_labels_of(span, span_name="GET /items/{id}")
        span.update_name("GET /items/{id}")
        assert_labels_of(span, span_name="GET /items/{id}")
        assert_labels_of(span)


def test_checkpoint_reads_another_thread_or_sink(provider: TracerProvider) -> None:
    """thread_id= reads that thread's labels; sink= works outside a recording() block."""
    tracer = provider.get_tracer(__name__)
    sink = RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    ready, release = threading.Event(), threading.Event()
    box: list[trace.Span] = []

    def worker() -> None:
        with tracer.start_as_current_span("worker") as span:
            box.append(span)
            ready.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert ready.wait(10)
        assert thread.ident is not None
        assert_labels_of(box[0], sink=sink, thread_id=thread.ident)
        with pytest.raises(AssertionError, match="no labels"):
            assert_labels_of(box[0], sink=sink)
    finally:
        release.set()
        thread.join(10)


def test_checkpoint_needs_a_sink_outside_recording() -> None:
    """Without sink= and outside recording(), a usage error, not a silent pass."""
    span = NonRecordingSpan(SpanContext(1, 2, is_remote=False))
    with pytest.raises(RuntimeError, match="needs sink="):
        assert_labels_of(span)


def test_checkpoint_inside_asyncio_handler_like_code(provider: TracerProvider) -> None:
    """A plain asyncio program (no anyio): the checkpoint holds after awaits and to_thread."""
    tracer = provider.get_tracer(__name__)

    async def handler() -> None:
        with tracer.start_as_current_span("GET /work") as span:
            await asyncio.sleep(0)
            assert_labels_of(span)
            await asyncio.to_thread(assert_labels_of, span)

    with recording(tracer_provider=provider):
        asyncio.run(handler())


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    name=st.text(max_size=20),
)
def test_labels_of_formats_ids_like_pyroscope_expects(
    trace_id: int, span_id: int, name: str
) -> None:
    """span_id is 16 and trace_id 32 lowercase hex digits that read back as the ids."""
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False))
    labels = labels_of(span, span_name=name, trace_id=True)
    assert re.fullmatch("[0-9a-f]{16}", labels["span_id"])
    assert re.fullmatch("[0-9a-f]{32}", labels["trace_id"])
    assert (int(labels["span_id"], 16), int(labels["trace_id"], 16)) == (span_id, trace_id)
    assert labels["span_name"] == name


def test_labels_of_a_span_without_context_is_an_error() -> None:
    """A ReadableSpan built without a context has no id to label with."""
    with pytest.raises(ValueError, match="no span context"):
        labels_of(ReadableSpan(name="orphan"))
