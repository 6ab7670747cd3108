"""SpanProfilesInstrumentor: what opentelemetry-instrument calls through the entry point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.instrumentation.instrumentor")

from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles._instrument import installed_settings
from span_profiles.otel_instrumentor import SpanProfilesInstrumentor
from span_profiles.testing import RecordingSink


@pytest.fixture
def instrumentor() -> Iterator[SpanProfilesInstrumentor]:
    """A fresh instrumentor, with span-profiles uninstalled before and after."""
    span_profiles.uninstrument()
    instrumentor = SpanProfilesInstrumentor()
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
        span_profiles.uninstrument()


def test_instrument_uses_the_given_provider_and_labels_its_spans(
    instrumentor: SpanProfilesInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """instrument(tracer_provider=...) installs span-profiles on that provider."""
    sink = RecordingSink()
    monkeypatch.setattr("span_profiles._instrument.default_sink", lambda: sink)
    provider = TracerProvider()
    instrumentor.instrument(tracer_provider=provider)
    assert span_profiles.is_instrumented()
    with provider.get_tracer("t").start_as_current_span("job") as span:
        assert sink.current()["span_id"] == format(span.get_span_context().span_id, "016x")
    instrumentor.uninstrument()
    assert not span_profiles.is_instrumented()


def test_settings_come_from_the_environment(
    instrumentor: SpanProfilesInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auto-instrumentation has no arguments: SPAN_PROFILES_* variables configure it."""
    monkeypatch.setattr("span_profiles._instrument.default_sink", RecordingSink)
    monkeypatch.setenv("SPAN_PROFILES_TRACE_ID", "true")
    instrumentor.instrument(tracer_provider=TracerProvider())
    settings = installed_settings()
    assert settings is not None
    assert settings.trace_id is True


def test_no_library_dependencies(instrumentor: SpanProfilesInstrumentor) -> None:
    """The instrumentor never refuses to load because of a library version."""
    assert tuple(instrumentor.instrumentation_dependencies()) == ()


def test_the_entry_point_is_registered_for_opentelemetry_instrument() -> None:
    """`opentelemetry-instrument` finds span-profiles through the opentelemetry_instrumentor group."""
    from importlib.metadata import entry_points

    from span_profiles.otel_instrumentor import SpanProfilesInstrumentor

    found = [
        ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "span_profiles"
    ]
    assert len(found) == 1
    assert found[0].load() is SpanProfilesInstrumentor
