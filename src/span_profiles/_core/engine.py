"""The label table: which labels each live span gives, and what each thread shows now.

Labels are a pure function of the OpenTelemetry context: the context's current span, looked up in
:data:`holders`, gives a :class:`Holder` whose ``labels`` tuple is what the thread must show. The
runtime hooks only decide *when* to look (every task step, every context attach/detach, every
thread job); this module decides *what*.

The per-step path compares tuples by identity: a holder builds its tuple once (and again only on a
rename), so "unchanged" costs one dict lookup and one ``is``.

The hook contract. ``instrument()`` builds one frozen :class:`HotPath` per installation and hands
it to every runtime hook as ``install(hot) -> undo``. Its fields never change while the
installation lives, so hooks bind them as default arguments (local lookups only). What *can*
change, the sink, sits behind two objects the bundle holds, and only their contents change:

* :data:`shown`, thread ident -> labels applied there, is the current sink's own bookkeeping
  (:func:`set_sink` hands the table to each new sink), read through ``hot.applied``;
* :data:`apply_cell` holds the current sink's ``apply``, called through ``hot.apply[0]``.

:func:`refresh_from` is the reference for "show this context's labels". The per-step hooks
(``Handle._run`` and ``StepCoroutine.__next__`` for asyncio, the trio instrument) repeat its few
lines inline on purpose: a call would add a Python frame, a quarter of their cost, to every task
step. Each copy carries the marker comment ``# kernel: keep in step with engine.refresh_from``,
and ``tests/hooks/test_kernels.py`` finds every marked copy and checks it against this function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context

from span_profiles import _otel_compat
from span_profiles._core import guard
from span_profiles._core.patching import Patches
from span_profiles._core.sinks import EMPTY, Labels, NullSink, Sink, SinkAdapter, ThreadLabelSink

__all__ = [
    "EMPTY",
    "KERNEL_MARK",
    "Holder",
    "HotPath",
    "Labels",
    "apply",
    "apply_cell",
    "clear",
    "hold",
    "holders",
    "observer",
    "refresh",
    "refresh_from",
    "release",
    "set_observer",
    "set_sink",
    "shown",
    "span_ended",
]

_get_ident = threading.get_ident

SPAN_KEY: str = _otel_compat.SPAN_KEY
"""The OTel context key holding the current span."""

KERNEL_MARK = "# kernel: keep in step with engine.refresh_from"
"""The comment every inlined copy of :func:`refresh_from` carries (the kernel test greps it)."""


_holder_lock = threading.Lock()
"""Orders a rename against the end of the same span (``Holder.renamed``/``Holder.end``)."""


class Holder:
    """The labels of one local root span (or of every span, with scope ``"all"``).

    Child spans share their root's holder, so a rename of the root reaches them, and ending the
    root empties the labels of the whole chain at once. ``labels`` is only ever rebound to a
    complete tuple, so a hook on another thread reads the old tuple or the new one, never a mix.
    """

    __slots__ = ("_ended", "_holds", "labels", "make", "parent", "profile_id", "span")

    def __init__(
        self, span: Any, make: Callable[[Any], Labels], parent: Holder | None = None
    ) -> None:
        self.span = span
        self.make = make
        self.parent = parent
        self.labels: Labels = make(span)
        self.profile_id: str = dict(self.labels).get("span_id", "")
        self._holds = 0
        self._ended = False

    def renamed(self) -> None:
        """Rebuild the labels after the span's name changed (no-op once its labels are gone)."""
        # Check and rebind under one lock: without the GIL, a rename racing the span's end on
        # another thread could otherwise bring the ended span's labels back (with the GIL too,
        # were a thread switch to fall between the check and the store).
        with _holder_lock:
            old = self.labels
            if not old:
                return
            self.labels = self.make(self.span)
        _changed(old, self.labels)

    def hold(self) -> None:
        """Keep the labels after the span ends, until :meth:`release`: a request's window.

        An adopted span's owner may end it before the request is over (FastAPI's telemetry ends
        its span at the last body message, before ``yield`` dependencies are torn down); the work
        that follows is still that request's.
        """
        with _holder_lock:
            self._holds += 1

    def release(self) -> bool:
        """Undo one :meth:`hold`; whether the labels went away now (the span had ended)."""
        with _holder_lock:
            self._holds -= 1
            old = self.labels
            if self._holds > 0 or not self._ended or not old:
                return False
            self.labels = EMPTY
        _changed(old, EMPTY)
        return True

    def end(self) -> bool:
        """The span ended: no labels from now on, or from the last :meth:`release`.

        Whether the labels went away now.
        """
        with _holder_lock:
            self._ended = True
            old = self.labels
            if self._holds > 0 or not old:
                return False
            self.labels = EMPTY
        _changed(old, EMPTY)
        return True


def _changed(old: Labels, new: Labels) -> None:
    """Tell the sink that keeps labels elsewhere than on threads (``lifecycle``)."""
    changed = lifecycle[0]
    if changed is not None:
        changed(old, new)


# -- process-wide state: the table, the sink behind its cell, the installation ----------------

holders: dict[Any, Holder] = {}
"""Live span object -> its holder. Filled by the span processor, emptied when spans end."""

shown: dict[int, Labels] = {}
"""Thread ident -> labels the current sink applied there (the sink's own bookkeeping)."""

_placeholder = NullSink()
_placeholder._applied = shown
_sink: list[ThreadLabelSink] = [_placeholder]
"""The current sink, in a cell (``set_sink`` changes its content)."""

apply_cell: list[Callable[[Labels], None]] = [_placeholder.apply]
"""The current sink's ``apply``. Hooks hold this cell; only its content ever changes."""

lifecycle: list[Callable[[Labels, Labels], None] | None] = [None]
"""The current sink's ``labels_changed(old, new)``, if it has one: a holder's labels were
replaced (a rename) or ended (``new`` empty). For sinks that keep labels elsewhere than on
threads (the built-in sampler's event ring); ``None`` for the others."""

observer: list[Any] = [None]
"""The label-change observer (the in-process wall producer, ``_samplers.wall.inprocess``) or
``None``. When set, every label change goes through it before the sink: ``changed(old, new)``
on the thread whose labels change, ``labels_changed(old, new)`` on a rename or end, and
``task_created(task, labels)`` from the task-creation hooks. The per-step kernels are unchanged:
they call ``apply[0]``, which is the observed ``apply`` while an observer is set."""

_lock = threading.RLock()


@dataclass(frozen=True)
class HotPath:
    """Everything a runtime hook reads, for one installation: the hook contract.

    ``instrument()`` builds one and passes it to each hook's ``install(hot) -> undo``. The fields
    are fixed for the installation's life; a sink change reaches the hooks through the contents
    of :attr:`applied`'s table and of :attr:`apply`, never by replacing them.
    """

    var: ContextVar[Any] | None
    """The ContextVar behind OTel's runtime context; ``None`` for a runtime context that is not
    the contextvars one (hooks that follow task switches then install nothing)."""
    patches: Patches = field(default_factory=Patches)
    """Every attribute patch of this installation, undone by ``uninstrument()``."""
    key: str = SPAN_KEY
    """The OTel context key of the current span."""
    holder: Callable[[Any], Holder | None] = holders.get
    """Span -> its holder (``holders.get``)."""
    applied: Callable[[int, Labels], Labels] = shown.get
    """Thread ident -> labels applied there (``shown.get``)."""
    apply: list[Callable[[Labels], None]] = field(default_factory=lambda: apply_cell)
    """The cell holding the current sink's ``apply``."""
    root_started: list[Callable[[], None]] = field(default_factory=list)
    """Called on the starting thread when a local root starts (hooks that install lazily)."""


installed: HotPath | None = None
"""The current installation's hot path; ``None`` while no runtime hook keeps labels right."""


def context_var() -> ContextVar[Any] | None:
    """The ContextVar holding OTel's current Context, or ``None`` for a non-contextvars runtime."""
    return _otel_compat.current_context_var(_otel_compat.runtime_context())


def current_sink() -> ThreadLabelSink:
    """The sink labels go to now."""
    return _sink[0]


def sink_chosen() -> bool:
    """Whether a sink was set (``False`` while the do-nothing placeholder is in place)."""
    return _sink[0] is not _placeholder


def set_sink(sink: Sink, *, release: bool = True) -> ThreadLabelSink:
    """Route labels to ``sink`` from now on, also from hooks already installed.

    The table the hooks read becomes the new sink's bookkeeping, so each thread applies its
    labels through the new sink at its next step. ``release`` first removes the calling thread's
    labels through the old sink; labels the old sink left on other threads stay with it.
    """
    new = sink if isinstance(sink, ThreadLabelSink) else SinkAdapter(sink)
    with _lock:
        old = _sink[0]
        if new is old:
            return new
        if release:
            try:
                old.apply(EMPTY)
            except Exception as exc:
                guard.fail("the label sink", exc)
        # The old sink keeps a view of its own; the shared table takes the new sink's view.
        old._applied = dict(shown)
        own = new._applied
        shown.clear()
        if own is not shown:
            shown.update(own)
        new._applied = shown
        _sink[0] = new
        _bind(new)
    return new


def set_observer(watcher: Any | None) -> None:
    """Route every label change through ``watcher`` first (``None``: no observer)."""
    with _lock:
        observer[0] = watcher
        _bind(_sink[0])


def _bind(sink: ThreadLabelSink) -> None:
    """Fill the cells the hooks call from the sink and the observer (under ``_lock``)."""
    watcher = observer[0]
    changed = getattr(sink, "labels_changed", None)
    if watcher is None:
        apply_cell[0] = sink.apply
        lifecycle[0] = changed
        return
    apply_cell[0] = _observed(sink.apply, watcher.changed)
    watched = watcher.labels_changed
    if changed is None:
        lifecycle[0] = watched
    else:

        def both(old: Labels, new: Labels) -> None:
            watched(old, new)
            changed(old, new)

        lifecycle[0] = both


def _observed(
    sink_apply: Callable[[Labels], None], changed: Callable[[Labels, Labels], None]
) -> Callable[[Labels], None]:
    def apply(
        labels: Labels,
        /,
        _shown: Callable[[int, Labels], Labels] = shown.get,
        _ident: Callable[[], int] = _get_ident,
    ) -> None:
        old = _shown(_ident(), EMPTY)
        if old is not labels:
            try:
                changed(old, labels)
            except Exception as exc:
                guard.fail("the wall-clock profile", exc, _drop_observer)
        sink_apply(labels)

    return apply


def _drop_observer() -> None:
    set_observer(None)


def sink_failed(exc: BaseException) -> None:
    """The sink raised: log once and switch it off, keeping the table the hooks read."""
    guard.fail("the label sink", exc, _switch_off_sink)


def _switch_off_sink() -> None:
    failed = _sink[0]
    failed.switch_off()
    set_sink(NullSink(), release=False)


def apply(labels: Labels) -> None:
    """Make ``labels`` the calling thread's labels (the slow path: they changed)."""
    try:
        apply_cell[0](labels)
    except Exception as exc:
        sink_failed(exc)


def clear() -> None:
    """Remove the calling thread's labels, if it has any."""
    if shown.get(_get_ident(), EMPTY):
        apply(EMPTY)


def refresh_from(otel_ctx: Any) -> None:
    """Make the calling thread show the labels of ``otel_ctx``."""
    holder = holders.get(otel_ctx.get(SPAN_KEY)) if otel_ctx is not None else None
    labels = EMPTY if holder is None else holder.labels
    if shown.get(_get_ident(), EMPTY) is not labels:
        apply(labels)


def span_ended(holder: Holder) -> None:
    """The holder's own span ended: its labels go now, or at the last :func:`release`."""
    _drop_if_gone(holder, holder.end)


def hold(holder: Holder) -> None:
    """Keep ``holder``'s labels (and its span in the table) past its span's end, until
    :func:`release`: the whole window of a request whose span an outer owner may end early."""
    holder.hold()


def release(holder: Holder) -> None:
    """Undo one :func:`hold`; if the span already ended, its labels go now."""
    _drop_if_gone(holder, holder.release)


def _drop_if_gone(holder: Holder, step: Callable[[], bool]) -> None:
    shown = shows(holder.labels)
    if not step():
        return
    holders.pop(holder.span, None)
    if shown:
        if installed is not None:
            refresh()
        else:
            # Standalone (no hooks): the starting thread goes back to the parent's labels.
            parent = holder.parent
            apply(parent.labels if parent is not None else EMPTY)


def refresh() -> None:
    """Make the calling thread show the labels of its current OTel context."""
    refresh_from(otel_context.get_current())


def current_holder() -> Holder | None:
    """The holder of the current context's span, if it is live and labelled."""
    return holders.get(otel_context.get_current().get(SPAN_KEY))


def shows(labels: Labels) -> bool:
    """Whether the calling thread shows exactly this labels tuple (by identity)."""
    return labels is not EMPTY and shown.get(_get_ident(), EMPTY) is labels


def reset_state() -> None:
    """Forget the installation and the sink (``uninstrument()``)."""
    global installed
    installed = None
    with _lock:
        if _sink[0] is not _placeholder:
            _placeholder._applied = {}
            set_sink(_placeholder)
