"""``instrument()`` / ``uninstrument()``: the span processor plus every runtime hook.

One installation at a time. ``instrument()`` builds its :class:`~span_profiles._core.engine.HotPath`
and installs each runtime hook (:func:`_hooks`) through the one contract every hook module has,
``install(hot) -> undo``; ``uninstrument()`` runs the undos in reverse and then undoes every patch.
A :class:`SpanProfilesProcessor` registered alone makes the same installation on its first local
root span, so it labels samples without ``instrument()``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from span_profiles import _otel_compat, _samplers
from span_profiles._core import engine, guard
from span_profiles._core.engine import HotPath
from span_profiles._core.patching import Patches
from span_profiles._core.processor import LabelProcessor, Scope
from span_profiles._core.sinks import Sink
from span_profiles._hooks import Hook
from span_profiles._settings import Settings

logger = logging.getLogger("span_profiles")

__all__ = ["SpanProfilesProcessor", "instrument", "is_instrumented", "uninstrument"]


def _hooks(step_hooks: bool = True) -> tuple[Hook, ...]:
    """The runtime hooks, in install order; ``trio`` is added once trio is imported (checked at
    install and whenever a local root starts), so trio is never imported by us.

    ``step_hooks=False`` (a sampler that reads the running task with the stack): asyncio gets
    the task-creation hook instead of the per-step one. trio keeps its per-step instrument either
    way: trio's tasks are invisible to CPython's stack reader, so its steps become thread events.
    The I/O hook serves both: a read callback's labels are the thread's while it runs.
    """
    from span_profiles._hooks import asyncio, otel, threads, transports

    return (otel, asyncio if step_hooks else asyncio.task_identity, transports, threads)


class SpanProfilesProcessor(LabelProcessor):
    """An OTel ``SpanProcessor`` linking spans to profiling samples; a drop-in for pyroscope-otel's.

    Local roots (no parent, or a remote parent) get the attribute ``pyroscope.profile.id`` = their
    span id as 16 lowercase hex chars, and the samples taken while they are current carry the
    label ``span_id`` with the same value, plus ``span_name``. Children inherit their root's
    labels; ``scope="all"`` gives every span its own.

    Registered alone, after ``pyroscope.configure(...)`` as pyroscope-otel's README shows, it
    installs the runtime hooks at its first local root span (what :func:`instrument` installs,
    without a second processor) and sends labels to the pyroscope-io agent, so labels follow
    the context across asyncio and trio task switches and into worker threads. Its
    ``shutdown()`` (the provider's) removes those hooks again.

    Args:
        scope: ``"root"`` (default) labels with the local root span; ``"all"`` with each span.
        span_name: add the ``span_name`` label (default ``True``).
        trace_id: add the ``trace_id`` label (default ``False``, unlike pyroscope-otel: Pyroscope
            servers older than mid-2026 make it a series label, one series per trace).
        install_hooks: install the runtime hooks on first use (default ``True``). With
            ``False`` the processor labels only the thread that starts a span, until it ends.
    """

    def __init__(
        self,
        *,
        scope: Scope = "root",
        span_name: bool = True,
        trace_id: bool = False,
        install_hooks: bool = True,
    ) -> None:
        super().__init__(scope=scope, span_name=span_name, trace_id=trace_id)
        self.install_hooks = bool(install_hooks)

    def _first_root(self) -> None:
        if self.install_hooks:
            try:
                _install(self, provider=None, settings=None, sink=None)
            except Exception as exc:
                # The processor itself keeps working: it labels the starting thread.
                guard.fail("installing the runtime hooks", exc)
        if not engine.sink_chosen():
            engine.set_sink(default_sink())

    def shutdown(self) -> None:
        """Stop registering spans; remove the runtime hooks if this processor installed them."""
        super().shutdown()
        with _lock:
            installation = _current
            if (
                installation is not None
                and installation.processor is self
                and not installation.added_processor
            ):
                uninstrument()


@dataclass
class _Installation:
    processor: SpanProfilesProcessor
    provider: Any
    added_processor: bool
    settings: Settings
    hot: HotPath
    choice: _samplers.Choice | None = None
    """The sampler the hooks and sink were set up for (``None``: an explicit sink)."""
    undo: list[Callable[[], None]] = field(default_factory=list)

    @property
    def patches(self) -> Patches:
        return self.hot.patches


_lock = threading.RLock()
_current: _Installation | None = None


def default_sink() -> Sink:
    """:class:`PyroscopeSink` when pyroscope-io is installed, else a sink that drops labels."""
    from span_profiles._samplers import pyroscope

    return pyroscope.SAMPLER.make_sink()


def _sampler_choice(settings: Settings) -> _samplers.Choice | None:
    """The sampler whose sink and hooks to install (``None``: today's per-step labels)."""
    if settings.profiler == "off":
        return None  # the user runs an agent of their own: thread labels, every step
    choice = _samplers.choose(settings.sampler)
    return choice if choice.name is not None else None


def _trio_when_imported(installation: _Installation) -> Callable[[], None]:
    def on_root_started() -> None:
        if "trio" not in sys.modules:
            return
        from span_profiles._hooks import trio

        hook: Hook = trio
        hot = installation.hot
        hot.root_started.remove(on_root_started)
        installation.undo.append(hook.install(hot))

    return on_root_started


def _install(
    processor: SpanProfilesProcessor,
    *,
    provider: Any | None,
    settings: Settings | None,
    sink: Sink | None,
    added: bool = False,
    replace_sink: bool = False,
) -> _Installation:
    """Make ``processor``'s installation the current one (or return the one in effect).

    ``sink=None``: the sink of the sampler the settings choose when it needs no per-step hooks
    (the built-in sampler); otherwise a sink already set stays (``replace_sink``: it is
    replaced), else :func:`default_sink`.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        if settings is None:
            settings = Settings.resolve(
                {
                    "scope": processor.scope,
                    "span_name": processor.span_name,
                    "trace_id": processor.trace_id,
                }
            )
        choice = None if sink is not None else _sampler_choice(settings)
        sampler = _samplers.get(choice.name) if choice is not None and choice.name else None
        step_hooks = sampler is None or sampler.step_hooks
        if sink is not None:
            engine.set_sink(sink)
        elif not step_hooks and sampler is not None:
            engine.set_sink(sampler.make_sink())
        elif replace_sink or not engine.sink_chosen():
            engine.set_sink(default_sink())
        var = engine.context_var()
        if var is None:
            logger.warning(
                "span-profiles: OpenTelemetry's runtime context is not the contextvars one; "
                "labels follow context changes but not task switches."
            )
        hot = HotPath(var)
        installation = _Installation(processor, provider, added, settings, hot, choice)
        try:
            for hook in _hooks(step_hooks):
                installation.undo.append(hook.install(hot))
            on_trio = _trio_when_imported(installation)
            hot.root_started.append(on_trio)
            on_trio()
        except BaseException:
            _undo(installation)
            raise
        engine.installed = hot
        _current = installation
        return installation


def _undo(installation: _Installation) -> None:
    for undo in reversed(installation.undo):
        try:
            undo()
        except Exception:
            logger.exception("span-profiles: uninstrument step failed")
    installation.patches.undo()
    engine.clear()
    engine.reset_state()


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
    Calling it again changes nothing and returns the installed processor (also when a
    :class:`SpanProfilesProcessor` registered alone made the installation).
    """
    with _lock:
        if _current is not None:
            return _current.processor
        explicit = {"scope": scope, "span_name": span_name, "trace_id": trace_id}
        if settings is None:
            settings = Settings.resolve(explicit)
        else:
            settings = settings.with_overrides(**explicit)
        processor = SpanProfilesProcessor(
            scope=settings.scope,
            span_name=settings.span_name,
            trace_id=settings.trace_id,
            install_hooks=False,
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
        _install(
            processor,
            provider=provider,
            settings=settings,
            sink=sink,
            added=added,
            replace_sink=True,
        )
        return processor


def uninstrument() -> None:
    """Remove the processor and every hook, restoring exactly what was patched.

    The calling thread's labels are cleared; other threads drop theirs at their next job end or
    task step boundary that still runs through a hook in flight. Safe to call when not installed.
    A processor registered alone that made the installation stays registered: it keeps setting
    ``pyroscope.profile.id`` but sends no more labels (it installs hooks on first use only).
    """
    global _current
    with _lock:
        installation, _current = _current, None
        if installation is None:
            return
        engine.installed = None
        _undo(installation)
        if installation.added_processor:
            _otel_compat.remove_span_processor(installation.provider, installation.processor)
            installation.processor.shutdown()
        guard.reset()


def is_instrumented() -> bool:
    """Whether :func:`instrument` (or a processor registered alone) is in effect."""
    return _current is not None


def installed_tracer_provider() -> Any | None:
    """The tracer provider ``instrument()`` added its processor to, or ``None``."""
    installation = _current
    return None if installation is None else installation.provider


def installed_choice() -> _samplers.Choice | None:
    """The sampler the installed hooks and sink were set up for (``None``: not instrumented,
    or an explicit sink)."""
    installation = _current
    return None if installation is None else installation.choice


def installed_settings() -> Settings | None:
    """The settings ``instrument()`` resolved, or ``None`` when not instrumented."""
    installation = _current
    return None if installation is None else installation.settings
