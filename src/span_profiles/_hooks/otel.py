"""OTel hooks: labels follow ``context.attach``/``detach`` and span renames within a task step.

Every way of making a span current (``start_as_current_span``, ``use_span``, instrumentations)
goes through the runtime context's ``attach``/``detach``, so wrapping that object keeps the
calling thread's labels right without knowing who started the span.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token

from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import Span

from span_profiles import _otel_compat
from span_profiles._core import engine, guard
from span_profiles._core.engine import HotPath
from span_profiles._hooks import no_undo
from span_profiles._otel_compat import RuntimeContext

_refresh_from = engine.refresh_from


class LabellingRuntimeContext(RuntimeContext):
    """Wraps OTel's runtime context and refreshes the thread's labels after every change."""

    def __init__(self, inner: RuntimeContext) -> None:
        self.inner = inner
        # Reads are the common case (every get_current_span()): no extra Python frame for them.
        self.get_current = inner.get_current  # type: ignore[method-assign]
        self.active = True

    def attach(self, context: Context) -> Token[Context]:
        """Attach ``context`` and show its labels on this thread."""
        token = self.inner.attach(context)
        if self.active:
            try:
                _refresh_from(context)
            except Exception as exc:
                guard.fail("the context hook", exc, self._off)
        return token

    def detach(self, token: Token[Context]) -> None:
        """Detach and show the labels of the context now current on this thread."""
        self.inner.detach(token)
        if self.active:
            try:
                _refresh_from(self.inner.get_current())
            except Exception as exc:
                guard.fail("the context hook", exc, self._off)

    def get_current(self) -> Context:
        """The current context (replaced per instance by the inner runtime's bound method)."""
        return self.inner.get_current()

    def _off(self) -> None:
        self.active = False


def install(hot: HotPath) -> Callable[[], None]:
    """Wrap the runtime context and ``Span.update_name`` (undone with ``hot.patches``)."""
    patches = hot.patches
    runtime = _otel_compat.runtime_context()
    if not isinstance(runtime, LabellingRuntimeContext):
        _otel_compat.set_runtime_context(patches, LabellingRuntimeContext(runtime))

    original_update_name = Span.update_name

    def update_name(self: Span, name: str) -> None:
        original_update_name(self, name)
        try:
            holder = engine.holders.get(self)
            if holder is not None and holder.span is self and holder.labels:
                shown = engine.shows(holder.labels)
                holder.renamed()
                if shown:
                    engine.refresh()
        except Exception as exc:
            guard.fail("the rename hook", exc, lambda: patches.undo(Span))

    update_name.__wrapped__ = original_update_name  # type: ignore[attr-defined]
    patches.set(Span, "update_name", update_name)
    return no_undo
