"""Every private OpenTelemetry name span-profiles touches, in one place.

OpenTelemetry offers no public way to do four things span-profiles needs:

- find the current span in a ``Context`` without a function call per task step
  (:data:`SPAN_KEY`, ``opentelemetry.trace.propagation._SPAN_KEY``);
- see every attach and detach, and read the current context straight from its ``ContextVar``
  (:func:`runtime_context`, :func:`set_runtime_context`, :func:`current_context_var`: the
  ``opentelemetry.context._RUNTIME_CONTEXT`` object and its ``_current_context``; a wrapper
  subclasses :class:`RuntimeContext`, ``opentelemetry.context.context._RuntimeContext``);
- know the HTTP semantic-convention opt-in mode that OTel's own instrumentations use
  (:func:`http_semconv_mode`, ``opentelemetry.instrumentation._semconv``);
- remove a span processor from an SDK tracer provider (:func:`remove_span_processor`,
  ``_active_span_processor._span_processors``);
- record HTTP server metrics exactly as OTel's ASGI and WSGI middleware do: their attribute
  filters (:func:`server_duration_attrs`, :func:`active_request_attrs`: the modules'
  ``_parse_duration_attrs`` / ``_parse_active_request_count_attrs``), the ASGI route target
  (:func:`asgi_route_target`, ``_collect_target_attribute``), the target attributes
  (:func:`set_http_target`: ``_semconv._set_http_target`` and ``util.http._parse_url_query``) and
  whether the new conventions are reported (:func:`reports_new`, ``_semconv._report_new``).

``tests/otel_compat/test_otel_compat.py`` is the canary: it fails, naming the missing piece, when
an OpenTelemetry upgrade removes one of them. Nothing else in the package may reach into
OpenTelemetry's private names.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.context.context import _RuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = [
    "SPAN_KEY",
    "RuntimeContext",
    "active_request_attrs",
    "asgi_route_target",
    "current_context_var",
    "http_semconv_mode",
    "remove_span_processor",
    "reports_new",
    "runtime_context",
    "server_duration_attrs",
    "set_http_target",
    "set_runtime_context",
]

SPAN_KEY: str = _SPAN_KEY
"""The OTel ``Context`` key holding the current span."""

RuntimeContext = _RuntimeContext
"""The base class of OTel's runtime contexts (``attach``, ``detach``, ``get_current``)."""

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


def server_duration_attrs(module: Any, attributes: Any, *, new: bool) -> dict[str, Any]:
    """The duration-metric attributes OTel's ``module`` (its ``asgi`` or ``wsgi``) keeps.

    ``new``: for ``http.server.request.duration`` (else the old ``http.server.duration``).
    """
    from opentelemetry.instrumentation._semconv import _StabilityMode

    mode = _StabilityMode.HTTP if new else _StabilityMode.DEFAULT
    parse: Any = module._parse_duration_attrs
    return dict(parse(attributes, mode))


def active_request_attrs(module: Any, attributes: Any, mode: Any) -> dict[str, Any]:
    """The ``http.server.active_requests`` attributes OTel's ``module`` keeps in ``mode``."""
    parse: Any = module._parse_active_request_count_attrs
    return dict(parse(attributes, mode))


def asgi_route_target(scope: Any) -> str | None:
    """OTel's ASGI ``http.target`` for metrics: the router's path format under ``root_path``."""
    from opentelemetry.instrumentation import asgi

    collect: Any = asgi._collect_target_attribute
    target = collect(scope)
    return target if isinstance(target, str) else None


def set_http_target(attributes: Any, target: str, mode: Any) -> None:
    """Set the target attributes of ``mode`` from ``target``, as OTel's ASGI middleware does."""
    from opentelemetry.instrumentation import _semconv
    from opentelemetry.util import http

    split: Any = http._parse_url_query
    path, query = split(target)
    set_target: Any = _semconv._set_http_target
    set_target(attributes, target, path, query, mode)


def reports_new(mode: Any) -> bool:
    """Whether ``mode`` reports the stable HTTP conventions (``OTEL_SEMCONV_STABILITY_OPT_IN``)."""
    from opentelemetry.instrumentation import _semconv

    report: Any = _semconv._report_new
    return bool(report(mode))
