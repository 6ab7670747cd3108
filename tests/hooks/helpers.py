"""Checkpoint helpers for the label oracle tests."""

from __future__ import annotations

import threading
from typing import Any

from span_profiles.testing import RecordingSink


def labels_of(span: Any, name: str | None = None) -> dict[str, str]:
    """The labels a local root span must give with the default settings."""
    return {
        "span_id": format(span.get_span_context().span_id, "016x"),
        "span_name": name if name is not None else span.name,
    }


class Checker:
    """Records every checkpoint where the calling thread's labels differ from the expected ones."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink
        self.failures: list[str] = []
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, expected: dict[str, str], where: str) -> None:
        try:
            actual: Any = self.sink.current()
        except AssertionError as exc:  # duplicate keys on the thread
            actual = str(exc)
        with self._lock:
            self.count += 1
            if actual != expected:
                self.failures.append(f"{where}: expected {expected}, got {actual}")
