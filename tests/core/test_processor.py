"""SpanProfilesProcessor: attributes, local roots, scopes, renames, standalone use."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import span_profiles
from span_profiles import PROFILE_ID_ATTRIBUTE, SpanProfilesProcessor
from span_profiles.testing import RecordingSink


def _hex(span: Any) -> str:
    return format(span.get_span_context().span_id, "016x")


def test_local_roots_get_the_profile_id_attribute_and_children_do_not(instrumented: Any) -> None:
    """The root's pyroscope.profile.id is its span id; children inherit labels, not the attribute."""
    tracer = instrumented.tracer
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child") as child:
            assert instrumented.sink.current() == {"span_id": _hex(root), "span_name": "root"}
        assert root.attributes[PROFILE_ID_ATTRIBUTE] == _hex(root)
        assert PROFILE_ID_ATTRIBUTE not in child.attributes


def test_remote_parent_makes_a_local_root(instrumented: Any) -> None:
    """A span whose parent came over the wire is a local root with its own labels."""
    remote = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with instrumented.tracer.start_as_current_span("server", context=ctx) as span:
        assert span.attributes[PROFILE_ID_ATTRIBUTE] == _hex(span)
        assert instrumented.sink.current()["span_id"] == _hex(span)


def test_rename_shows_in_later_labels(instrumented: Any) -> None:
    """A root renamed after routing shows its new name, also when a child is current."""
    tracer = instrumented.tracer
    with tracer.start_as_current_span("GET") as root:
        with tracer.start_as_current_span("handler"):
            root.update_name("GET /items/{id}")
            assert instrumented.sink.current()["span_name"] == "GET /items/{id}"
        assert instrumented.sink.current() == {
            "span_id": _hex(root),
            "span_name": "GET /items/{id}",
        }


def test_scope_all_and_trace_id_options() -> None:
    """scope='all' labels with each span's own id; trace_id=True adds the 32-hex trace id."""
    span_profiles.uninstrument()
    provider, sink = TracerProvider(), RecordingSink()
    span_profiles.instrument(
        tracer_provider=provider, sink=sink, scope="all", span_name=False, trace_id=True
    )
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("root") as root:
            with tracer.start_as_current_span("child") as child:
                assert sink.current() == {
                    "span_id": _hex(child),
                    "trace_id": format(child.get_span_context().trace_id, "032x"),
                }
                assert child.attributes[PROFILE_ID_ATTRIBUTE] == _hex(child)  # type: ignore[attr-defined]
            assert sink.current()["span_id"] == _hex(root)
        assert sink.current() == {}
    finally:
        span_profiles.uninstrument()


def test_environment_sets_options(monkeypatch: Any) -> None:
    """SPAN_PROFILES_SCOPE and friends apply when instrument() gets no argument for them."""
    span_profiles.uninstrument()
    monkeypatch.setenv("SPAN_PROFILES_SPAN_NAME", "false")
    monkeypatch.setenv("SPAN_PROFILES_TRACE_ID", "true")
    provider, sink = TracerProvider(), RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink, trace_id=False)
    try:
        with provider.get_tracer("t").start_as_current_span("r") as span:
            assert sink.current() == {"span_id": _hex(span)}
    finally:
        span_profiles.uninstrument()


def test_processor_without_hooks_labels_the_starting_thread_without_piling_up() -> None:
    """With install_hooks=False, the processor alone replaces labels at start, restores at end."""
    span_profiles.uninstrument()
    from span_profiles._core import engine

    sink = RecordingSink()
    engine.set_sink(sink)
    provider = TracerProvider()
    provider.add_span_processor(SpanProfilesProcessor(install_hooks=False))
    tracer = provider.get_tracer("t")
    try:
        first = tracer.start_span("a")
        second = tracer.start_span("b")
        assert sink.current() == {"span_id": _hex(second), "span_name": "b"}
        second.end()
        assert sink.current() == {}
        first.end()
        assert sink.current() == {}
    finally:
        engine.reset_state()


def test_processor_rejects_an_unknown_scope() -> None:
    """A bad scope is a clear error at construction."""
    with pytest.raises(ValueError, match="scope"):
        SpanProfilesProcessor(scope="every")  # type: ignore[arg-type]


@pytest.mark.agent
def test_same_attribute_as_pyroscope_otel() -> None:
    """The attribute key matches pyroscope-otel's, so it is a drop-in replacement."""
    otel = pytest.importorskip("pyroscope.otel")
    assert otel.PROFILE_ID_SPAN_ATTRIBUTE_KEY == PROFILE_ID_ATTRIBUTE


def test_a_held_span_keeps_its_labels_until_released(instrumented: Any) -> None:
    """A request window holds its span's labels past the span's end, until released."""
    from span_profiles._core import engine

    span = instrumented.tracer.start_span("GET /items/{id}")
    holder = engine.holders[span]
    engine.hold(holder)
    with trace.use_span(span, end_on_exit=False):
        span.end()
        assert instrumented.sink.current() == {"span_id": _hex(span), "span_name": span.name}
        engine.release(holder)
        # Released after the end: gone at once, from the thread that showed them too.
        assert instrumented.sink.current() == {}
    assert span not in engine.holders


def test_a_release_before_the_end_changes_nothing(instrumented: Any) -> None:
    """Holds nest; released before the span ends, the labels last until the end."""
    from span_profiles._core import engine

    with instrumented.tracer.start_as_current_span("job") as span:
        holder = engine.holders[span]
        engine.hold(holder)
        engine.hold(holder)
        engine.release(holder)
        engine.release(holder)
        assert instrumented.sink.current()["span_id"] == _hex(span)
    assert instrumented.sink.current() == {}
    assert span not in engine.holders


def test_an_expected_server_root_is_named_at_birth_and_held(instrumented: Any) -> None:
    """A SERVER root started where an adapter expects one gets the adapter's name before any
    label exists, and its labels stay until the adapter releases them."""
    from span_profiles._core import engine
    from span_profiles._core.processor import ServerRoot, expected_server_root

    expected = ServerRoot("GET /items/{id}")
    token = expected_server_root.set(expected)
    try:
        internal = instrumented.tracer.start_span("not a server span")
        span = instrumented.tracer.start_span("GET", kind=trace.SpanKind.SERVER)
        second = instrumented.tracer.start_span("GET", kind=trace.SpanKind.SERVER)
    finally:
        expected_server_root.reset(token)
    assert internal.name == "not a server span"
    assert span.name == "GET /items/{id}"
    assert second.name == "GET"  # only the first server root is the expected one
    assert expected.holder is engine.holders[span]
    assert dict(expected.holder.labels)["span_name"] == "GET /items/{id}"
    span.end()
    assert expected.holder.labels  # held
    engine.release(expected.holder)
    assert not expected.holder.labels
    internal.end()
    second.end()
