"""Helpers for tests of code instrumented with span-profiles.

``RecordingSink`` stands in for the profiling agent: it keeps, per thread, the set of label pairs
the agent would hold right now, and an ordered history of every add and remove::

    sink = RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    ...
    assert sink.current() == {"span_id": expected_id, "span_name": "GET /items/{id}"}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from span_profiles._core.sinks import ThreadLabelSink

__all__ = ["LabelEvent", "RecordingSink"]


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
