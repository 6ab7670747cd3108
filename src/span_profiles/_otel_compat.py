"""Every private OpenTelemetry name span-profiles touches, in one place.

OpenTelemetry offers no public way to do four things span-profiles needs:

- find the current span in a ``Context`` without a function call per task step
  (:data:`SPAN_KEY`, ``opentelemetry.trace.propagation._SPAN_KEY``);
- see every attach and detach, and read the current context straight from its ``ContextVar``
  (:func:`runtime_context`, :func:`set_runtime_context`, :func:`current_context_var`: the
  ``opentelemetry.context._RUNTIME_CONTEXT`` object and its ``_current_context``);
- know the HTTP semantic-convention opt-in mode that OTel's own instrumentations use
  (:func:`http_semconv_mode`, ``opentelemetry.instrumentation._semconv``);
- remove a span processor from an SDK tracer provider (:func:`remove_span_processor`,
  ``_active_span_processor._span_processors``).

``tests/otel_compat/test_otel_compat.py`` is the canary: it fails, naming the missing piece, when
an OpenTelemetry upgrade removes one of them. Nothing else in the package may reach into
OpenTelemetry's private names.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = [
    "SPAN_KEY",
    "current_context_var",
    "http_semconv_mode",
    "remove_span_processor",
    "runtime_context",
    "set_runtime_context",
]

SPAN_KEY: str = _SPAN_KEY
"""The OTel ``Context`` key holding the current span."""

_RUNTIME_ATTR = "_RUNTIME_CONTEXT"


def runtime_context() -> Any:
    """OTel's process-wide runtime context object (``opentelemetry.context._RUNTIME_CONTEXT``)."""
    return getattr(_otel_context, _RUNTIME_ATTR)


def set_runtime_context(patches: Any, runtime: Any) -> None:
    """Replace OTel's runtime context through ``patches`` (a ``Patches``), so it can be undone."""
    patches.set(_otel_context, _RUNTIME_ATTR, runtime)


def current_context_var(runtime: Any) -> ContextVar[Any] | None:
    """The ``ContextVar`` behind a contextvars runtime context (ours unwrapped via ``inner``).

    ``None`` for a runtime context that keeps the context elsewhere.
    """
    inner = getattr(runtime, "inner", runtime)
    var = getattr(inner, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


def http_semconv_mode() -> Any:
    """OTel's HTTP semantic-convention opt-in mode (``OTEL_SEMCONV_STABILITY_OPT_IN``).

    Needs ``opentelemetry-instrumentation``, which the ASGI and WSGI instrumentations bring.
    """
    from opentelemetry.instrumentation import _semconv

    stability: Any = _semconv._OpenTelemetrySemanticConventionStability
    stability._initialize()
    return stability._get_opentelemetry_stability_opt_in_mode(
        _semconv._OpenTelemetryStabilitySignalType.HTTP
    )


def remove_span_processor(provider: Any, processor: Any) -> bool:
    """Take ``processor`` off an SDK tracer provider; ``False`` if the provider is not one we know.

    The SDK has no public way to remove a processor; without this, ``uninstrument()`` would
    leave a (disabled) processor behind on every call.
    """
    active: Any = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    lock = getattr(active, "_lock", None)
    if not isinstance(processors, tuple) or lock is None:
        return False
    with lock:
        active._span_processors = tuple(p for p in processors if p is not processor)
    return True
