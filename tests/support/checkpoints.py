"""Label checkpoints inside the code under test, checked afterwards on the test's thread.

:func:`span_profiles.testing.assert_labels_of` raises where it runs; inside a request handler, a
task or a worker-thread job the server or the pool may swallow that. A :class:`Checkpoints`
records instead (which labels, where, on which thread), and the test asserts on the record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from span_profiles.testing import RecordingSink, labels_of

__all__ = ["Checkpoints", "GateCalls", "Seen", "labels_of"]


@dataclass(frozen=True)
class Seen:
    """What one checkpoint saw: the calling thread's labels, or the sink's error about them."""

    where: str
    labels: dict[str, str] | str
    thread: int
    expected: Mapping[str, str] | None = None

    @property
    def wrong(self) -> bool:
        """The checkpoint was given the labels it expected and saw others."""
        return self.expected is not None and self.labels != self.expected


class Checkpoints:
    """Call it at each checkpoint: ``check("where")``, or ``check("where", expected_labels)``."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def __call__(self, where: str, expected: Mapping[str, str] | None = None) -> None:
        """Record the calling thread's labels at ``where`` (and what they should be, if known)."""
        labels: dict[str, str] | str
        try:
            labels = self.sink.current()
        except AssertionError as exc:  # one key with two values on this thread
            labels = str(exc)
        seen = Seen(where, labels, threading.get_ident(), expected)
        with self._lock:
            self.seen.append(seen)

    @property
    def count(self) -> int:
        """How many checkpoints ran."""
        return len(self.seen)

    @property
    def failures(self) -> list[str]:
        """One line per checkpoint that saw other labels than it was told to expect."""
        return [f"{s.where}: expected {s.expected}, got {s.labels}" for s in self.seen if s.wrong]

    def assert_all(
        self, span: trace.Span | ReadableSpan, name: str, *, count: int | None = None
    ) -> None:
        """Every checkpoint saw exactly ``span``'s labels, with span_name ``name``."""
        expected = labels_of(span, span_name=name)
        wrong = [s for s in self.seen if s.labels != expected]
        assert not wrong, f"expected {expected} everywhere, wrong at {wrong}"
        if count is not None:
            assert len(self.seen) == count, self.seen


class GateCalls:
    """Stands in for ``sampler_gate.wait``: records, per call, the thread and the sink's history
    length, so a test can check that each label switch came right after a wait."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink
        self.calls: list[tuple[int, int]] = []

    def __call__(self) -> None:
        self.calls.append((threading.get_ident(), len(self.sink.history)))

    def threads(self) -> set[int]:
        """The threads that waited."""
        return {thread_id for thread_id, _ in self.calls}

    def unguarded_switches(self, thread_id: int) -> list[int]:
        """History indexes on ``thread_id`` where a switch (a run of adds, or of removes) began
        without a wait right before it; ``[]`` when every switch waited."""
        events = [(i, e.op) for i, e in enumerate(self.sink.history) if e.thread_id == thread_id]
        starts = [i for n, (i, op) in enumerate(events) if n == 0 or events[n - 1][1] != op]
        waited = {at for tid, at in self.calls if tid == thread_id}
        return [start for start in starts if start not in waited]
