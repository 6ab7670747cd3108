"""Sinks: replace semantics, no call when unchanged, both agent API generations."""

from __future__ import annotations

import threading
import types
from typing import Any

import pytest

from span_profiles import PyroscopeSink
from span_profiles.testing import RecordingSink

A = (("span_id", "00000000000000aa"), ("span_name", "GET /a"))
B = (("span_id", "00000000000000bb"), ("span_name", "GET /a"))


def _fake_agent(legacy: bool) -> tuple[Any, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    if legacy:

        def add_thread_tag(thread_id: int, key: str, value: str) -> None:
            calls.append(("add", thread_id, key, value))

        def remove_thread_tag(thread_id: int, key: str, value: str) -> None:
            calls.append(("remove", thread_id, key, value))
    else:

        def add_thread_tag(key: str, value: str) -> None:  # type: ignore[misc]
            calls.append(("add", key, value))

        def remove_thread_tag(key: str, value: str) -> None:  # type: ignore[misc]
            calls.append(("remove", key, value))

    agent = types.SimpleNamespace(
        __name__="fake_agent", add_thread_tag=add_thread_tag, remove_thread_tag=remove_thread_tag
    )
    return agent, calls


def test_replace_removes_the_old_pair_before_adding_the_new_one() -> None:
    """Changing span_id removes exactly the old pair, then adds the new; span_name is untouched."""
    agent, calls = _fake_agent(legacy=False)
    sink = PyroscopeSink(agent)
    sink.apply(A)
    calls.clear()
    sink.apply(B)
    assert calls == [
        ("remove", "span_id", "00000000000000aa"),
        ("add", "span_id", "00000000000000bb"),
    ]


def test_reapplying_the_same_labels_makes_no_call() -> None:
    """The same labels, even as an equal but distinct tuple, cost no agent call."""
    agent, calls = _fake_agent(legacy=False)
    sink = PyroscopeSink(agent)
    sink.apply(A)
    calls.clear()
    sink.apply(A)
    sink.apply(tuple(A))
    assert calls == []
    sink.clear()
    assert [c[0] for c in calls] == ["remove", "remove"]
    calls.clear()
    sink.clear()
    assert calls == []


def test_legacy_agent_gets_the_calling_thread_id() -> None:
    """The 0.8 API (thread_id, key, value) is detected and given the calling thread's ident."""
    agent, calls = _fake_agent(legacy=True)
    sink = PyroscopeSink(agent)
    assert sink.legacy_api
    sink.apply(A[:1])
    assert calls == [("add", threading.get_ident(), "span_id", "00000000000000aa")]


def test_state_is_per_thread() -> None:
    """Labels applied on one thread are neither seen nor removed from another."""
    sink = RecordingSink()
    sink.apply(A)
    other: list[dict[str, str]] = []
    thread = threading.Thread(target=lambda: (other.append(sink.current()), sink.clear()))
    thread.start()
    thread.join()
    assert other == [{}]
    assert sink.current() == dict(A)
    sink.clear()


def test_recording_sink_reports_duplicate_keys() -> None:
    """If a key ever held two values at once, current() says so instead of hiding it."""
    sink = RecordingSink()
    sink._record_add("span_id", "1")
    sink._record_add("span_id", "2")
    with pytest.raises(AssertionError, match="duplicate"):
        sink.current()


def test_real_pyroscope_agent_accepts_calls_before_configure() -> None:
    """With the real pyroscope-io, the sink uses its native functions and calls succeed."""
    pyroscope = pytest.importorskip("pyroscope")
    sink = PyroscopeSink()
    assert not sink.legacy_api
    assert sink._add is pyroscope.lib.add_thread_tag
    sink.apply(A)
    sink.apply(B)
    sink.clear()
    assert sink.applied() == ()


class _PlainSink:
    """A sink implementing only the protocol: apply and clear."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    def apply(self, labels: tuple[tuple[str, str], ...], /) -> None:
        self.calls.append(("apply", labels))

    def clear(self) -> None:
        self.calls.append(("clear", ()))


def test_a_plain_protocol_sink_gets_only_changes() -> None:
    """A user sink with just apply/clear is called once per change, never for repeats."""
    import asyncio

    from opentelemetry.sdk.trace import TracerProvider

    import span_profiles

    span_profiles.uninstrument()
    provider, sink = TracerProvider(), _PlainSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink, span_name=False)
    tracer = provider.get_tracer("t")

    async def main() -> str:
        with tracer.start_as_current_span("r") as span:
            for _ in range(10):
                await asyncio.sleep(0)
            return format(span.get_span_context().span_id, "016x")

    try:
        span_id = asyncio.run(main())
    finally:
        span_profiles.uninstrument()
    assert sink.calls == [("apply", (("span_id", span_id),)), ("apply", ())]
