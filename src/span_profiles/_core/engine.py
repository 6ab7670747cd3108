"""The label table: which labels each live span gives, and what each thread shows now.

Labels are a pure function of the OpenTelemetry context: the context's current span, looked up in
:data:`holders`, gives a :class:`Holder` whose ``labels`` tuple is what the thread must show. The
runtime hooks only decide *when* to look (every task step, every context attach/detach, every
thread job); this module decides *what*.

The per-step path compares tuples by identity: a holder builds its tuple once (and again only on a
rename), so "unchanged" costs one dict lookup and one ``is``.

:func:`refresh_from` is the reference for "show this context's labels". The per-step hooks
(``Handle._run`` and ``StepCoroutine.__next__`` for asyncio, the trio instrument) repeat its few
lines inline on purpose: a call would add a Python frame, a quarter of their cost, to every task
step. Change them together.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context

from span_profiles import _otel_compat
from span_profiles._core import guard
from span_profiles._core.sinks import EMPTY, Labels, NullSink, Sink, SinkAdapter, ThreadLabelSink

__all__ = [
    "EMPTY",
    "Holder",
    "Labels",
    "apply",
    "clear",
    "holders",
    "refresh",
    "refresh_from",
]

_get_ident = threading.get_ident

SPAN_KEY: str = _otel_compat.SPAN_KEY
"""The OTel context key holding the current span."""


class Holder:
    """The labels of one local root span (or of every span, with scope ``"all"``).

    Child spans share their root's holder, so a rename of the root reaches them, and ending the
    root empties the labels of the whole chain at once.
    """

    __slots__ = ("labels", "make", "parent", "profile_id", "span")

    def __init__(
        self, span: Any, make: Callable[[Any], Labels], parent: Holder | None = None
    ) -> None:
        self.span = span
        self.make = make
        self.parent = parent
        self.labels: Labels = make(span)
        self.profile_id: str = dict(self.labels).get("span_id", "")

    def renamed(self) -> None:
        """Rebuild the labels after the span's name changed (no-op once ended)."""
        if self.labels:
            self.labels = self.make(self.span)

    def end(self) -> None:
        """The span ended: from now on it gives no labels."""
        self.labels = EMPTY


holders: dict[Any, Holder] = {}
"""Live span object -> its holder. Filled by the span processor, emptied when spans end."""

_holders_get = holders.get

_sink: ThreadLabelSink = NullSink()
_applied_get: Callable[[int, Labels], Labels] = _sink._applied.get
"""Thread ident -> labels applied there: the sink's own record, read directly by the hooks."""
_sink_apply: list[Callable[[Labels], None]] = [_sink.apply]
"""A cell holding the sink's ``apply``: hooks capture the cell, so a failing sink can be swapped
out under them."""

_context_var: ContextVar[Any] | None = None
"""The ContextVar behind OTel's runtime context, when it is the contextvars one."""

hooked = False
"""True while ``instrument()``'s hooks keep labels equal to the context."""


def context_var() -> ContextVar[Any] | None:
    """The ContextVar holding OTel's current Context, or ``None`` for a non-contextvars runtime."""
    global _context_var
    if _context_var is None:
        _context_var = _otel_compat.current_context_var(_otel_compat.runtime_context())
    return _context_var


def set_sink(sink: Sink) -> ThreadLabelSink:
    """Route labels to ``sink`` from now on (hooks installed later read its bookkeeping)."""
    global _sink, _applied_get, _sink_apply
    _sink = sink if isinstance(sink, ThreadLabelSink) else SinkAdapter(sink)
    _applied_get = _sink._applied.get
    _sink_apply = [_sink.apply]
    return _sink


def sink_failed(exc: BaseException) -> None:
    """The sink raised: log once and switch it off, keeping the bookkeeping the hooks read."""
    guard.fail("the label sink", exc, _switch_off_sink)


def _switch_off_sink() -> None:
    sink = _sink
    sink.switch_off()
    # A subclass may override apply() itself: fall back to the base's bookkeeping-only apply.
    _sink_apply[0] = functools.partial(ThreadLabelSink.apply, sink)


def apply(labels: Labels) -> None:
    """Make ``labels`` the calling thread's labels (the slow path: they changed)."""
    try:
        _sink_apply[0](labels)
    except Exception as exc:
        sink_failed(exc)


def clear() -> None:
    """Remove the calling thread's labels, if it has any."""
    if _applied_get(_get_ident(), EMPTY):
        apply(EMPTY)


def refresh_from(otel_ctx: Any) -> None:
    """Make the calling thread show the labels of ``otel_ctx``."""
    holder = _holders_get(otel_ctx.get(SPAN_KEY)) if otel_ctx is not None else None
    labels = EMPTY if holder is None else holder.labels
    if _applied_get(_get_ident(), EMPTY) is not labels:
        apply(labels)


def refresh() -> None:
    """Make the calling thread show the labels of its current OTel context."""
    refresh_from(otel_context.get_current())


def current_holder() -> Holder | None:
    """The holder of the current context's span, if it is live and labelled."""
    return _holders_get(otel_context.get_current().get(SPAN_KEY))


def shows(labels: Labels) -> bool:
    """Whether the calling thread shows exactly this labels tuple (by identity)."""
    return labels is not EMPTY and _applied_get(_get_ident(), EMPTY) is labels


span_started_hooks: list[Callable[[], None]] = []
"""Called on the starting thread when a local root starts (per-loop hooks install lazily there)."""


def reset_state() -> None:
    """Forget all per-thread state and the sink (``uninstrument()``)."""
    global hooked
    hooked = False
    span_started_hooks.clear()
    set_sink(NullSink())
