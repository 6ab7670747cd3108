"""The span processor: gives local roots their ``pyroscope.profile.id`` and registers their labels.

The public ``span_profiles.SpanProfilesProcessor`` (in ``_instrument``) adds what needs the layers
above the core: installing the runtime hooks on first use and choosing the default sink.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from span_profiles._core import engine, guard
from span_profiles._core.sinks import Labels

__all__ = ["PROFILE_ID_ATTRIBUTE", "LabelProcessor", "Scope", "ServerRoot", "expected_server_root"]

PROFILE_ID_ATTRIBUTE = "pyroscope.profile.id"
"""The span attribute Grafana looks for to offer "Profiles for this span"."""

Scope = Literal["root", "all"]

_SCOPES = ("root", "all")


class ServerRoot:
    """The SERVER span another instrumentation is about to start for a request, as a request
    adapter running outside it knows it: the name it will end up with, and the holder to keep.

    FastAPI's built-in telemetry starts its span named by the method alone and renames it only
    after routing; an adapter that found the route first sets :data:`expected_server_root`, and
    the processor names that span at birth and holds its labels for the adapter (which calls
    :func:`span_profiles._core.engine.release` when the request is over).
    """

    __slots__ = ("holder", "name", "request", "route")

    def __init__(self, name: str, *, route: str | None = None, request: Any = None) -> None:
        self.name = name
        self.route = route
        """The route template in ``name``, for the adapter's own lookup."""
        self.request = request
        """The request this is about (the adapter's scope), so nested lookups can reuse it."""
        self.holder: engine.Holder | None = None
        """The holder of the span, once it started (held until the adapter releases it)."""


expected_server_root: ContextVar[ServerRoot | None] = ContextVar(
    "span_profiles_expected_server_root", default=None
)
"""Set by a request adapter around an instrumentation that starts the request's SERVER span."""


class LabelProcessor(SpanProcessor):
    """The framework-free core of ``span_profiles.SpanProfilesProcessor``: attribute and label table.

    Local roots (no parent, or a remote parent) get the attribute ``pyroscope.profile.id`` = their
    span id as 16 lowercase hex chars, and a :class:`~span_profiles._core.engine.Holder` with the
    labels the samples taken while they are current must carry. Children share their root's
    holder; ``scope="all"`` gives every span its own. With runtime hooks installed
    (``engine.installed``) the hooks show the labels; without, the labels go on the thread that
    starts a span until it ends. :meth:`_first_root` runs once, before the first local root.
    """

    def __init__(
        self, *, scope: Scope = "root", span_name: bool = True, trace_id: bool = False
    ) -> None:
        if scope not in _SCOPES:
            raise ValueError(f"scope must be 'root' or 'all', not {scope!r}")
        self.scope: Scope = scope
        self.span_name = bool(span_name)
        self.trace_id = bool(trace_id)
        self._enabled = True
        self._first = True
        # on_end gets a read-only copy: the live span (the key of engine.holders) is found by id.
        self._live: dict[int, Span] = {}

    def make_labels(self, span: Any) -> Labels:
        """The labels a span gives, in the order the agent receives them."""
        ctx = span.get_span_context()
        labels: list[tuple[str, str]] = [("span_id", format(ctx.span_id, "016x"))]
        if self.span_name:
            labels.append(("span_name", span.name))
        if self.trace_id:
            labels.append(("trace_id", format(ctx.trace_id, "032x")))
        return tuple(labels)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Register the span's labels; local roots (every span with scope "all") get the attribute."""
        if not self._enabled:
            return
        try:
            self._on_start(span, parent_context)
        except Exception as exc:
            guard.fail("the span processor", exc, self._disable)

    def _first_root(self) -> None:
        """Called once, before this processor registers its first local root (a subclass hook)."""

    def _on_start(self, span: Span, parent_context: Context | None) -> None:
        parent = span.parent
        parent_holder = None
        if parent is not None and not parent.is_remote:
            parent_holder = engine.holders.get(trace.get_current_span(parent_context))
        if parent_holder is None or self.scope == "all":
            expected = expected_server_root.get() if parent_holder is None else None
            if expected is not None and (
                expected.holder is not None or span.kind is not SpanKind.SERVER
            ):
                expected = None
            if expected is not None and span.name != expected.name:
                # Named before any label exists: no sample sees the bare method.
                span.update_name(expected.name)
            holder = engine.Holder(span, self.make_labels, parent_holder)
            if expected is not None:
                expected.holder = holder
                engine.hold(holder)
            span.set_attribute(PROFILE_ID_ATTRIBUTE, holder.profile_id)
            root = parent_holder is None
        else:
            holder = parent_holder
            root = False
        if root and self._first:
            self._first = False
            self._first_root()
        engine.holders[span] = holder
        self._live[span.get_span_context().span_id] = span
        hot = engine.installed
        if hot is not None:
            if root:
                for on_root_started in tuple(hot.root_started):
                    on_root_started()
        elif holder.span is span:
            # Standalone: the best we can do without hooks is the starting thread.
            engine.apply(holder.labels)

    def on_end(self, span: ReadableSpan) -> None:
        """The span ended: it gives no labels from now on, on any thread."""
        ctx = span.context
        live = self._live.pop(ctx.span_id, None) if ctx is not None else None
        if live is None:
            return
        try:
            self._end(live)
        except Exception as exc:
            guard.fail("the span processor", exc, self._disable)

    def _end(self, span: Any) -> None:
        holder = engine.holders.get(span)
        if holder is None:
            return
        if holder.span is not span:
            # A child sharing its root's labels: nothing changes for them.
            engine.holders.pop(span, None)
            return
        engine.span_ended(holder)

    def _disable(self) -> None:
        self._enabled = False
        for span in self._live.values():
            engine.holders.pop(span, None)
        self._live.clear()

    def shutdown(self) -> None:
        """Stop registering spans and forget the live ones."""
        self._disable()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True
