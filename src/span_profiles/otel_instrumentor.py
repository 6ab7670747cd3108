"""``opentelemetry-instrument`` support: auto-instrumentation installs span-profiles too.

With span-profiles installed, ``opentelemetry-instrument python app.py`` (or ``uvicorn``,
``gunicorn`` ...) finds :class:`SpanProfilesInstrumentor` through the ``opentelemetry_instrumentor``
entry point and calls :func:`span_profiles.instrument` with the tracer provider it configured.
Settings come from the environment (``SPAN_PROFILES_*``, ``PYROSCOPE_*``).

To turn it off while keeping the rest of auto-instrumentation::

    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=span_profiles
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from span_profiles._instrument import instrument, uninstrument

try:
    # The module opts out of type checking with a file-level "type: ignore".
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined, unused-ignore]
        BaseInstrumentor,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.otel_instrumentor needs opentelemetry-instrumentation. "
        "Install it with: pip install opentelemetry-instrumentation"
    ) from exc

__all__ = ["SpanProfilesInstrumentor"]


class SpanProfilesInstrumentor(BaseInstrumentor):  # type: ignore[misc, unused-ignore]
    """An OpenTelemetry instrumentor that calls :func:`span_profiles.instrument`."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """None: span-profiles works with whatever the other instrumentations start."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        instrument(tracer_provider=kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
