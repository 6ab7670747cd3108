"""Sinks: replace semantics, no call when unchanged, the agent's 1.x API only."""

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


def test_an_agent_older_than_1_4_is_refused() -> None:
    """The 0.8 API (thread_id, key, value) is refused at once, naming the version needed."""
    agent, _ = _fake_agent(legacy=True)
    with pytest.raises(TypeError, match=r"pyroscope-io >= 1\.4"):
        PyroscopeSink(agent)


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


@pytest.mark.agent
def test_real_pyroscope_agent_accepts_calls_before_configure() -> None:
    """With the real pyroscope-io, the sink uses its native functions and calls succeed."""
    import pyroscope

    sink = PyroscopeSink()
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
    # Each loop iteration clears the labels for the loop's own work and the next step shows
    # them again: changes only, never the same labels twice in a row.
    labelled = ("apply", (("span_id", span_id),))
    assert sink.calls[0] == labelled
    assert sink.calls[-1] == ("apply", ())
    assert set(sink.calls) == {labelled, ("apply", ())}
    assert all(a != b for a, b in zip(sink.calls, sink.calls[1:], strict=False))


def _states(sink: RecordingSink) -> list[dict[str, set[str]]]:
    """Replay the history: the agent's pairs after every single call, per key."""
    held: set[tuple[str, str]] = set()
    states = []
    for event in sink.history:
        (held.add if event.op == "add" else held.discard)((event.key, event.value))
        by_key: dict[str, set[str]] = {}
        for key, value in held:
            by_key.setdefault(key, set()).add(value)
        states.append(by_key)
    return states


def _never_span_id_without_name(sink: RecordingSink) -> None:
    for i, state in enumerate(_states(sink)):
        if "span_id" in state:
            assert len(state["span_id"]) == 1, (i, state)
            assert state.get("span_name"), (i, state, sink.history)


RENAMED = (("span_id", "00000000000000aa"), ("span_name", "GET /a/{id}"))
TRACED = (("span_id", "00000000000000bb"), ("span_name", "POST"), ("trace_id", "0" * 31 + "1"))


@pytest.mark.parametrize(
    "sequence",
    [
        pytest.param([A, RENAMED], id="rename"),
        pytest.param([A, B, A], id="switch span, same name"),
        pytest.param([A, (("span_id", "00000000000000cc"), ("span_name", "GET /c"))], id="switch"),
        pytest.param([(), A, (), RENAMED, ()], id="on and off"),
        pytest.param([A, TRACED, RENAMED, TRACED], id="keys differ"),
    ],
)
def test_no_intermediate_state_has_span_id_without_span_name(sequence: list[Any]) -> None:
    """Between any two agent calls, a sample sees at most one span_id, and never one alone."""
    sink = RecordingSink()
    for labels in sequence:
        sink.apply(labels)
        assert sink.current() == dict(labels)
    _never_span_id_without_name(sink)


def test_a_rename_adds_the_new_name_before_removing_the_old() -> None:
    """The rename of a live span keeps span_id and swaps only the name, new one first."""
    sink = RecordingSink()
    sink.apply(A)
    sink.reset()
    sink.apply(RENAMED)
    assert [(e.op, e.key, e.value) for e in sink.history] == [
        ("add", "span_name", "GET /a/{id}"),
        ("remove", "span_name", "GET /a"),
    ]


def test_a_rename_through_the_hooks_never_shows_a_bare_span_id(instrumented: Any) -> None:
    """``update_name`` on the live root goes through the sink in the safe order."""
    sink = instrumented.sink
    with instrumented.tracer.start_as_current_span("GET") as root:
        root.update_name("GET /items/{id}")
        with instrumented.tracer.start_as_current_span("handler"):
            root.update_name("GET /items/{id}/again")
    assert sink.current() == {}
    assert ("add", "span_name", "GET /items/{id}/again") in [
        (e.op, e.key, e.value) for e in sink.history
    ]
    _never_span_id_without_name(sink)


def test_keys_that_differ_make_each_call_once() -> None:
    """Tuples from two processors (different keys) are replaced with no duplicate call."""
    sink = RecordingSink()
    sink.apply(A)
    sink.reset()
    sink.apply(TRACED)
    calls = [(e.op, e.key, e.value) for e in sink.history]
    assert len(calls) == len(set(calls))
    assert sorted(calls) == sorted(
        [
            ("remove", "span_id", "00000000000000aa"),
            ("remove", "span_name", "GET /a"),
            ("add", "span_name", "POST"),
            ("add", "trace_id", "0" * 31 + "1"),
            ("add", "span_id", "00000000000000bb"),
        ]
    )
    assert calls[-1] == ("add", "span_id", "00000000000000bb")
