"""Helpers for tests of code instrumented with span-profiles.

``recording()`` instruments for one ``with`` block with a :class:`RecordingSink`, which stands in
for the profiling agent: it keeps, per thread, the set of label pairs the agent would hold right
now, and an ordered history of every add and remove. ``assert_labels_of()`` is the checkpoint to
put where work runs (a handler, a task, a worker-thread job): it fails unless the labels there are
the span's::

    from span_profiles.testing import assert_labels_of, recording

    def test_work_is_labelled_with_its_request(provider: TracerProvider) -> None:
        tracer = provider.get_tracer(__name__)

        async def handler() -> None:  # the code under test, with a checkpoint in it
            await asyncio.to_thread(assert_labels_of, request)

        with recording(tracer_provider=provider) as sink:
            with tracer.start_as_current_span("GET /items/{id}") as request:
                asyncio.run(handler())
            assert sink.current() == {}

Inside servers and thread pools an ``AssertionError`` may be swallowed or turned into a 500: there,
record ``sink.current()`` at the checkpoint and compare it with :func:`labels_of` afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from span_profiles._core.processor import Scope
from span_profiles._core.sinks import ThreadLabelSink
from span_profiles._instrument import instrument, is_instrumented, uninstrument
from span_profiles._settings import Settings

__all__ = ["LabelEvent", "RecordingSink", "assert_labels_of", "labels_of", "recording"]

_recording: list[RecordingSink] = []
"""The sinks of the open ``recording()`` blocks, innermost last."""


@dataclass(frozen=True)
class LabelEvent:
    """One call the sink received: ``op`` of ``key=value`` on thread ``thread_id``."""

    thread_id: int
    op: Literal["add", "remove"]
    key: str
    value: str


class RecordingSink(ThreadLabelSink):
    """A sink that records labels like the agent holds them: a set of pairs per thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[int, dict[tuple[str, str], None]] = {}
        self.history: list[LabelEvent] = []
        """Every add and remove, in order."""
        super().__init__(self._record_add, self._record_remove)

    def _record_add(self, key: str, value: str) -> None:
        tid = threading.get_ident()
        with self._lock:
            self._pairs.setdefault(tid, {})[(key, value)] = None
            self.history.append(LabelEvent(tid, "add", key, value))

    def _record_remove(self, key: str, value: str) -> None:
        tid = threading.get_ident()
        with self._lock:
            self._pairs.get(tid, {}).pop((key, value), None)
            self.history.append(LabelEvent(tid, "remove", key, value))

    def pairs(self, thread_id: int | None = None) -> list[tuple[str, str]]:
        """The pairs held for a thread right now (default: the calling one), oldest first."""
        tid = threading.get_ident() if thread_id is None else thread_id
        with self._lock:
            return list(self._pairs.get(tid, {}))

    def current(self, thread_id: int | None = None) -> dict[str, str]:
        """The labels applied right now on a thread (default: the calling one).

        Raises ``AssertionError`` if a key holds two values at once: the agent would label
        samples with both, which is exactly the bug this library exists to prevent.
        """
        pairs = self.pairs(thread_id)
        labels = dict(pairs)
        if len(labels) != len(pairs):
            raise AssertionError(f"duplicate label keys on one thread: {pairs}")
        return labels

    def threads(self) -> list[int]:
        """Idents of the threads that hold labels right now."""
        with self._lock:
            return [tid for tid, pairs in self._pairs.items() if pairs]

    def reset(self) -> None:
        """Forget the history (the current labels are kept)."""
        with self._lock:
            self.history.clear()


@contextmanager
def recording(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    scope: Scope | None = None,
    span_name: bool | None = None,
    trace_id: bool | None = None,
    settings: Settings | None = None,
) -> Iterator[RecordingSink]:
    """Instrument with a fresh :class:`RecordingSink` for the ``with`` block; uninstrument after.

    The arguments are :func:`span_profiles.instrument`'s. Inside the block,
    :func:`assert_labels_of` checks against this sink unless given another.

    Args:
        tracer_provider: the SDK provider to add the processor to; default: the global one.
        scope: ``"root"`` (default) labels with the local root span; ``"all"`` with each span.
        span_name: add the ``span_name`` label (default ``True``).
        trace_id: add the ``trace_id`` label (default ``False``).
        settings: resolved :class:`~span_profiles.Settings`; the three options above win over it.

    Raises:
        RuntimeError: span-profiles is already instrumented (by ``instrument()`` or an adapter's
            first request), so its sink, not this one, would get the labels.
    """
    if is_instrumented():
        raise RuntimeError(
            "span-profiles is already instrumented, so recording() cannot install its sink: "
            "call span_profiles.uninstrument() before the block (an adapter instruments on its "
            "app's first request or lifespan startup)"
        )
    sink = RecordingSink()
    instrument(
        tracer_provider=tracer_provider,
        sink=sink,
        scope=scope,
        span_name=span_name,
        trace_id=trace_id,
        settings=settings,
    )
    _recording.append(sink)
    try:
        yield sink
    finally:
        _recording.remove(sink)
        uninstrument()


def labels_of(
    span: trace.Span | ReadableSpan, *, span_name: str | bool = True, trace_id: bool = False
) -> dict[str, str]:
    """The labels span-profiles applies to work done under ``span`` (the local root by default).

    Args:
        span: a live or finished span.
        span_name: ``True`` for the span's name now, a string for another one (the name a
            span ends with, such as a route template, for labels seen before the rename), or
            ``False`` when the ``span_name`` setting is off.
        trace_id: include the ``trace_id`` label (the ``trace_id`` setting).
    """
    context = span.get_span_context()
    if context is None:
        raise ValueError(f"span {_name(span)!r} has no span context")
    labels = {"span_id": format(context.span_id, "016x")}
    if span_name is not False:
        labels["span_name"] = _name(span) if span_name is True else span_name
    if trace_id:
        labels["trace_id"] = format(context.trace_id, "032x")
    return labels


def assert_labels_of(
    span: trace.Span | ReadableSpan,
    *,
    sink: RecordingSink | None = None,
    span_name: str | None = None,
    thread_id: int | None = None,
) -> None:
    """Checkpoint: fail unless the labels on this thread, right now, are ``span``'s.

    ``span_id`` must be the span's; ``span_name`` and ``trace_id``, where labelled, must be its
    name and trace id; no other label may be there. With ``scope="root"`` (the default), pass the
    local root span (the request span), not a child.

    Args:
        span: the span whose labels the work here must carry.
        sink: the sink to read; default: the one of the innermost :func:`recording` block.
        span_name: the ``span_name`` label it must carry; default: the span's current name, if
            the label is there.
        thread_id: check another thread's labels (default: the calling thread's).

    Raises:
        AssertionError: the labels differ, saying what was expected and what is there.
        RuntimeError: no ``sink`` was given outside a :func:`recording` block.
    """
    if sink is None:
        if not _recording:
            raise RuntimeError("assert_labels_of() needs sink= outside a recording() block")
        sink = _recording[-1]
    actual = sink.current(thread_id)
    expected = labels_of(
        span,
        span_name=True if span_name is None else span_name,
        trace_id="trace_id" in actual,
    )
    if span_name is None and "span_name" not in actual:
        del expected["span_name"]
    if actual == expected:
        return
    where = f"thread {threading.get_ident() if thread_id is None else thread_id}"
    if not actual:
        raise AssertionError(
            f"no labels on {where}, expected {expected} of span {_name(span)!r}: is "
            "span-profiles instrumented, and does this code run in the span's context?"
        )
    raise AssertionError(
        f"labels on {where} are {actual}, expected {expected} of span {_name(span)!r}"
    )


def _name(span: trace.Span | ReadableSpan) -> str:
    # A NonRecordingSpan (a remote or unsampled parent) has no name.
    return str(getattr(span, "name", ""))
