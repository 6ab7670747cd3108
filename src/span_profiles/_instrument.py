"""``instrument()`` / ``uninstrument()``: the span processor plus every runtime hook."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from span_profiles import _otel_compat
from span_profiles._core import engine, guard
from span_profiles._core.patching import Patches
from span_profiles._core.processor import Scope, SpanProfilesProcessor
from span_profiles._core.sinks import NullSink, PyroscopeSink, Sink
from span_profiles._settings import Settings

logger = logging.getLogger("span_profiles")

__all__ = ["instrument", "is_instrumented", "uninstrument"]


@dataclass
class _Installation:
    processor: SpanProfilesProcessor
    provider: Any
    added_processor: bool
    settings: Settings
    patches: Patches = field(default_factory=Patches)
    undo: list[Callable[[], None]] = field(default_factory=list)


_lock = threading.RLock()
_current: _Installation | None = None


def default_sink() -> Sink:
    """:class:`PyroscopeSink` when pyroscope-io is installed, else a sink that drops labels."""
    try:
        return PyroscopeSink()
    except ImportError:
        logger.warning(
            "span-profiles: pyroscope-io is not installed, labels go nowhere. "
            "Install it with: pip install 'span-profiles[pyroscope]'"
        )
        return NullSink()


def _install_trio_when_imported(var: Any, installation: _Installation) -> Callable[[], None]:
    def ensure() -> None:
        if "trio" not in sys.modules:
            return
        from span_profiles._hooks import trio as trio_hook

        engine.span_started_hooks.remove(ensure)
        trio_hook.install(var)
        installation.undo.append(trio_hook.uninstall)

    return ensure


def instrument(
    *,
    tracer_provider: Any | None = None,
    sink: Sink | None = None,
    scope: Scope | None = None,
    span_name: bool | None = None,
    trace_id: bool | None = None,
    settings: Settings | None = None,
) -> SpanProfilesProcessor:
    """Install the span processor and every runtime hook, so profiling labels follow the context.

    After this, whatever runs on a thread (an asyncio or trio task step, a worker-thread job, a
    plain thread) carries the labels of its OpenTelemetry context: ``span_id`` of the local root
    span, ``span_name`` (unless turned off) and ``trace_id`` (only if asked for).

    Args:
        tracer_provider: the SDK provider to add the processor to; default: the global one.
        sink: where labels go; default :class:`PyroscopeSink` when pyroscope-io is installed.
        scope: ``"root"`` (default) labels with the local root span; ``"all"`` with each span.
        span_name: add the ``span_name`` label (default ``True``).
        trace_id: add the ``trace_id`` label (default ``False``: older servers make it a series
            label).
        settings: resolved :class:`Settings` (adapters pass these); the three options above,
            when given, win over it.

    Unset options come from the environment (``SPAN_PROFILES_SCOPE`` ...), then the defaults.
    Calling it again changes nothing and returns the installed processor.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current.processor
        explicit = {"scope": scope, "span_name": span_name, "trace_id": trace_id}
        if settings is None:
            settings = Settings.resolve(explicit)
        else:
            settings = settings.with_overrides(**explicit)
        processor = SpanProfilesProcessor(
            scope=settings.scope, span_name=settings.span_name, trace_id=settings.trace_id
        )
        provider: Any = (
            tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        )
        added = False
        if callable(getattr(provider, "add_span_processor", None)):
            provider.add_span_processor(processor)
            added = True
        else:
            logger.warning(
                "span-profiles: the tracer provider %r is not an SDK TracerProvider, so no span "
                "is recorded or labelled. Set one with trace.set_tracer_provider(TracerProvider()) "
                "before instrument(), or pass tracer_provider=.",
                provider,
            )
        installation = _Installation(processor, provider, added, settings)
        engine.set_sink(default_sink() if sink is None else sink)

        from span_profiles._hooks import otel as otel_hook

        otel_hook.install(installation.patches)
        var = engine.context_var()
        if var is None:
            logger.warning(
                "span-profiles: OpenTelemetry's runtime context is not the contextvars one; "
                "labels follow context changes but not task switches."
            )
        else:
            from span_profiles._hooks import asyncio as asyncio_hook
            from span_profiles._hooks import threads as threads_hook

            asyncio_hook.install(installation.patches, var)
            installation.undo.append(asyncio_hook.uninstall)
            threads_hook.install(installation.patches)
            installation.undo.append(threads_hook.uninstall)
            ensure_trio = _install_trio_when_imported(var, installation)
            engine.span_started_hooks.append(ensure_trio)
            ensure_trio()
        engine.hooked = True
        _current = installation
        return processor


def uninstrument() -> None:
    """Remove the processor and every hook, restoring exactly what was patched.

    The calling thread's labels are cleared; other threads drop theirs at their next job end or
    task step boundary that still runs through a hook in flight. Safe to call when not installed.
    """
    global _current
    with _lock:
        installation, _current = _current, None
        if installation is None:
            return
        engine.hooked = False
        for undo in reversed(installation.undo):
            try:
                undo()
            except Exception:
                logger.exception("span-profiles: uninstrument step failed")
        installation.patches.undo()
        if installation.added_processor:
            _otel_compat.remove_span_processor(installation.provider, installation.processor)
        installation.processor.shutdown()
        engine.clear()
        engine.reset_state()
        guard.reset()


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _current is not None


def installed_tracer_provider() -> Any | None:
    """The tracer provider ``instrument()`` added its processor to, or ``None``."""
    installation = _current
    return None if installation is None else installation.provider


def installed_settings() -> Settings | None:
    """The settings ``instrument()`` resolved, or ``None`` when not instrumented."""
    installation = _current
    return None if installation is None else installation.settings
