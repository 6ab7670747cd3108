"""The canary: every private OpenTelemetry name span-profiles relies on is still there.

When an OpenTelemetry upgrade removes one, this file fails and names it; the fix belongs in
``span_profiles/_otel_compat.py`` alone.
"""

from __future__ import annotations

from contextvars import ContextVar

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from span_profiles import _otel_compat
from span_profiles._core.patching import Patches


def test_span_key_finds_the_current_span_in_a_context() -> None:
    """``SPAN_KEY`` is the key ``trace.set_span_in_context`` writes the span under."""
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    ctx = trace.set_span_in_context(span)
    assert ctx.get(_otel_compat.SPAN_KEY) is span, (
        "opentelemetry.trace.propagation._SPAN_KEY no longer names the span in a Context"
    )


def test_runtime_context_has_a_current_context_var() -> None:
    """The runtime context keeps the current Context in a ContextVar we can read directly."""
    runtime = _otel_compat.runtime_context()
    assert runtime is otel_context._RUNTIME_CONTEXT
    var = _otel_compat.current_context_var(runtime)
    assert isinstance(var, ContextVar), (
        "opentelemetry.context._RUNTIME_CONTEXT has no _current_context ContextVar any more"
    )
    token = otel_context.attach(otel_context.set_value("canary", 1))
    try:
        assert var.get() is otel_context.get_current()
    finally:
        otel_context.detach(token)


def test_runtime_context_can_be_replaced_and_restored() -> None:
    """Replacing the runtime context through Patches is seen by OTel and undone exactly."""
    original = _otel_compat.runtime_context()
    patches = Patches()
    marker = object()
    _otel_compat.set_runtime_context(patches, marker)
    try:
        assert otel_context._RUNTIME_CONTEXT is marker
    finally:
        patches.undo()
    assert _otel_compat.runtime_context() is original


def test_span_processor_can_be_removed() -> None:
    """``remove_span_processor`` takes a processor off an SDK provider, leaving the others."""
    provider = TracerProvider()
    kept = SimpleSpanProcessor(InMemorySpanExporter())
    removed = SimpleSpanProcessor(InMemorySpanExporter())
    provider.add_span_processor(kept)
    provider.add_span_processor(removed)
    assert _otel_compat.remove_span_processor(provider, removed), (
        "TracerProvider._active_span_processor._span_processors is gone"
    )
    assert provider._active_span_processor._span_processors == (kept,)


def test_unknown_provider_is_left_alone() -> None:
    """A provider without the SDK's internals is reported, not broken."""
    assert not _otel_compat.remove_span_processor(object(), object())


def test_http_semconv_mode_is_readable() -> None:
    """OTel's HTTP semantic-convention opt-in mode can be read (needs opentelemetry-instrumentation)."""
    pytest.importorskip("opentelemetry.instrumentation._semconv")
    from opentelemetry.instrumentation._semconv import _StabilityMode

    assert isinstance(_otel_compat.http_semconv_mode(), _StabilityMode)
