"""Shared by the OTel parity tests: one SDK for traces and metrics, and ways to compare them.

Each parity test runs the same application once behind OTel's middleware and once behind ours,
on the same providers, and compares what each produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import span_profiles
from span_profiles.testing import RecordingSink

ROUTE = "http.route"

Points = dict[str, dict[frozenset[tuple[str, Any]], float]]
"""Metric name -> attribute set -> histogram count or counter value."""


@dataclass
class Telemetry:
    """A tracer provider and a meter provider, both recorded in memory."""

    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader
    sink: RecordingSink

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in order."""
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        """Finished SERVER spans."""
        return [s for s in self.spans() if s.kind is trace.SpanKind.SERVER]

    def server_span(self) -> ReadableSpan:
        """The one SERVER span (fails if there are more or none)."""
        spans = self.server_spans()
        assert len(spans) == 1, [(s.name, s.kind) for s in self.spans()]
        return spans[0]

    def points(self) -> Points:
        """What the metric reader holds now (cumulative)."""
        found: Points = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    series = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        value = getattr(point, "count", None)
                        series[key] = float(getattr(point, "value", 0) if value is None else value)
        return found

    def reset(self) -> None:
        """Forget the spans (metrics are cumulative: see :meth:`with_fresh_meter`)."""
        self.exporter.clear()

    def with_fresh_meter(self) -> Telemetry:
        """The same tracing, with a new meter provider and reader (shut it down after)."""
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        return Telemetry(self.tracer_provider, self.exporter, meter_provider, reader, self.sink)


def without_route(points: Points) -> Points:
    """``points`` with ``http.route`` dropped from the attributes (ours adds it)."""
    out: Points = {}
    for name, series in points.items():
        merged: dict[frozenset[tuple[str, Any]], float] = {}
        for key, value in series.items():
            trimmed = frozenset(item for item in key if item[0] != ROUTE)
            merged[trimmed] = merged.get(trimmed, 0) + value
        out[name] = merged
    return out


def attributes(
    span: ReadableSpan, *, drop: tuple[str, ...] = (ROUTE, "pyroscope.profile.id")
) -> dict[str, Any]:
    """A span's attributes without ``drop`` (ours adds ``http.route``; the profile id differs)."""
    return {k: v for k, v in (span.attributes or {}).items() if k not in drop}


def exception_events(span: ReadableSpan) -> list[Any]:
    """The span's ``exception`` events."""
    return [e for e in span.events if e.name == "exception"]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Fresh providers; span-profiles instrumented on the tracer provider."""
    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    sink = RecordingSink()
    span_profiles.uninstrument()
    span_profiles.instrument(tracer_provider=tracer_provider, sink=sink)
    try:
        yield Telemetry(tracer_provider, exporter, meter_provider, reader, sink)
    finally:
        span_profiles.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def set_semconv_mode(monkeypatch: pytest.MonkeyPatch, opt_in: str | None) -> None:
    """Make OTel read ``OTEL_SEMCONV_STABILITY_OPT_IN`` again (it reads it once per process)."""
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )

    if opt_in is None:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    else:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    monkeypatch.setattr(Stability, "_initialized", False)
    monkeypatch.setattr(Stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})


SEMCONV_MODES = [
    pytest.param(None, id="semconv-old"),
    pytest.param("http", id="semconv-http"),
    pytest.param("http/dup", id="semconv-dup"),
]
"""``OTEL_SEMCONV_STABILITY_OPT_IN`` values: old, stable and both conventions."""


@pytest.fixture
def trace_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """The global response propagator sends ``traceresponse``, as OTel's docs set it up."""
    from opentelemetry.instrumentation import propagators

    monkeypatch.setattr(propagators, "_RESPONSE_PROPAGATOR", None)
    set_global: Any = propagators.set_global_response_propagator
    set_global(propagators.TraceResponsePropagator())


def header_values(headers: Any, name: str) -> list[str]:
    """Every value of response header ``name`` in ASGI (bytes pairs) or WSGI (str pairs) form."""
    wanted = name.lower()
    values = []
    for key, value in headers:
        key_text = key.decode() if isinstance(key, bytes) else key
        if key_text.lower() == wanted:
            values.append(value.decode() if isinstance(value, bytes) else value)
    return values


def same_keys(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    """Assert two attribute maps are equal, showing the difference."""
    assert dict(ours) == dict(theirs), {
        "only ours": {k: v for k, v in ours.items() if theirs.get(k) != v},
        "only theirs": {k: v for k, v in theirs.items() if ours.get(k) != v},
    }
