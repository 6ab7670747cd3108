"""Helpers shared by the ASGI, FastAPI and Django tests: label probes and span lookups."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from span_profiles.testing import RecordingSink
from tests.support.checkpoints import Checkpoints, Seen

__all__ = ["Probe", "Seen", "hex_id", "only_span", "server_spans", "span_names_applied"]


def hex_id(span: Any) -> str:
    """The 16-hex span id of a live or finished span."""
    context = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return format(context.span_id, "016x")


Probe = Checkpoints
"""Records the calling thread's labels at checkpoints inside handlers (tests/support/checkpoints.py)."""


def server_spans(exporter: Any) -> list[ReadableSpan]:
    """Finished spans of kind SERVER."""
    return [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]


def only_span(exporter: Any) -> ReadableSpan:
    """The one finished span (fails if there are more or none)."""
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def span_names_applied(sink: RecordingSink, span_id: str) -> set[str]:
    """Every ``span_name`` a thread showed together with ``span_id``, over the sink's history.

    A span listed under one name only gives a one-element set; a sample taken before routing
    with a bare method name would add that name.
    """
    names: set[str] = set()
    current: dict[int, dict[str, str]] = {}
    for event in sink.history:
        labels = current.setdefault(event.thread_id, {})
        if event.op == "add":
            labels[event.key] = event.value
        elif labels.get(event.key) == event.value:
            del labels[event.key]
        if labels.get("span_id") == span_id and "span_name" in labels:
            names.add(labels["span_name"])
    return names
