"""Sinks: where a thread's labels go (the profiling agent, or a recorder in tests).

A sink sees only the calling thread. It keeps per thread what it applied, so applying the same
labels again makes no agent call, and it gives the agent's add/remove API replace semantics: the
agent keeps a *set* of pairs per thread, so adding ``span_id=B`` while ``span_id=A`` is set would
label samples with both.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

Labels = tuple[tuple[str, str], ...]
"""An immutable, ordered set of ``(key, value)`` label pairs."""

EMPTY: Labels = ()

_get_ident = threading.get_ident


@runtime_checkable
class Sink(Protocol):
    """Receives the labels of the calling thread."""

    def apply(self, labels: Labels, /) -> None:
        """Make ``labels`` exactly the labels of the calling thread."""

    def clear(self) -> None:
        """Remove every label this sink applied to the calling thread."""


def _ignore(key: str, value: str) -> None:
    return None


class ThreadLabelSink:
    """Base for sinks over a per-thread add/remove API.

    Subclasses pass two callables that add and remove one pair *on the calling thread*. This class
    keeps what it applied per thread and turns :meth:`apply` into the minimal removes and adds, in
    an order that keeps every intermediate state honest for a sample taken between two calls:

    * the first pair (``span_id``) is removed first and added last, so a sample may see no span
      but never two, and never a ``span_id`` without the other labels of its span;
    * while the span stays (a rename), the new value of a label is added before the old one is
      removed, so no sample of the span lacks ``span_name`` (it may briefly carry both names).
    """

    def __init__(
        self, add: Callable[[str, str], object], remove: Callable[[str, str], object]
    ) -> None:
        self._add = add
        self._remove = remove
        self._applied: dict[int, Labels] = {}

    # The hottest method after the step hooks: the fast paths are written out, trading
    # complexity for speed (one processor builds every tuple, so keys nearly always line up).
    def apply(self, labels: Labels, /) -> None:
        """Make ``labels`` exactly the labels of the calling thread."""
        tid = _get_ident()
        applied = self._applied
        old = applied.get(tid, EMPTY)
        if old is labels:
            return
        if not labels:
            remove = self._remove
            for key, value in old:
                remove(key, value)
            del applied[tid]
            return
        size = len(labels)
        if len(old) == size:
            if size == 1:
                # span_id alone: the commonest switch, without loop machinery.
                (old_key, old_value), (key, value) = old[0], labels[0]
                if old_key == key:
                    if old_value != value:
                        self._remove(old_key, old_value)
                        self._add(key, value)
                    applied[tid] = labels
                    return
            else:
                for i in range(size):
                    if old[i][0] != labels[i][0]:
                        break
                else:
                    # Same keys in the same order: replace only the values that differ.
                    remove = self._remove
                    add = self._add
                    (key, value), (_, old_value) = labels[0], old[0]
                    if value != old_value:
                        # Another span: its old labels go with no span shown, its span_id last.
                        remove(key, old_value)
                        for i in range(1, size):
                            (other, new), (_, was) = labels[i], old[i]
                            if new != was:
                                remove(other, was)
                                add(other, new)
                        add(key, value)
                    else:
                        for i in range(1, size):
                            (other, new), (_, was) = labels[i], old[i]
                            if new != was:
                                add(other, new)
                                remove(other, was)
                    applied[tid] = labels
                    return
        self._replace_all(old, labels)
        applied[tid] = labels

    def _replace_all(self, old: Labels, labels: Labels) -> None:
        """Keys differ (never with one processor, or from no labels): the same order rules."""
        first = labels[0]
        same_span = bool(old) and old[0] == first
        if not same_span:
            for pair in old:
                if pair not in labels:
                    self._remove(*pair)
        for i in range(1, len(labels)):
            pair = labels[i]
            if pair not in old:
                self._add(*pair)
        if same_span:
            for pair in old:
                if pair not in labels:
                    self._remove(*pair)
        elif first not in old:
            self._add(*first)

    def switch_off(self) -> None:
        """Stop calling the agent (after a failure); bookkeeping goes on so hooks stay cheap."""
        self._add = self._remove = _ignore

    def clear(self) -> None:
        """Remove every label this sink applied to the calling thread."""
        self.apply(EMPTY)

    def applied(self, thread_id: int | None = None) -> Labels:
        """The labels this sink believes are applied on a thread (default: the calling one)."""
        return self._applied.get(_get_ident() if thread_id is None else thread_id, EMPTY)


class NullSink(ThreadLabelSink):
    """A sink that drops labels (keeping only the bookkeeping); used when no agent is installed."""

    def __init__(self) -> None:
        super().__init__(_ignore, _ignore)


class SinkAdapter(ThreadLabelSink):
    """Gives a plain :class:`Sink` (apply/clear only) the per-thread bookkeeping of the base."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(_ignore, _ignore)
        self.sink = sink

    def apply(self, labels: Labels, /) -> None:
        """Forward changed labels to the wrapped sink."""
        tid = _get_ident()
        if self._applied.get(tid, EMPTY) is labels:
            return
        self.sink.apply(labels)
        if labels:
            self._applied[tid] = labels
        else:
            self._applied.pop(tid, None)

    def switch_off(self) -> None:
        """Stop forwarding."""
        self.sink = NullSink()


def _positional_arity(func: Callable[..., object]) -> int | None:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in params
    )


class PyroscopeSink(ThreadLabelSink):
    """Applies labels as pyroscope-io thread tags on the calling thread.

    Needs the 1.x API ``add_thread_tag(key, value)`` (pyroscope-io >= 1.4, as the ``pyroscope``
    extra requires). ``agent`` defaults to the installed ``pyroscope`` module; pass another
    module-like object to wrap a different agent.
    """

    def __init__(self, agent: ModuleType | Any | None = None) -> None:
        if agent is None:
            try:
                import pyroscope
            except ImportError as exc:
                raise ImportError(
                    "PyroscopeSink needs the pyroscope-io agent. "
                    "Install it with: pip install 'span-profiles[pyroscope]'"
                ) from exc
            agent = pyroscope
        add: Callable[..., object] = agent.add_thread_tag
        remove: Callable[..., object] = agent.remove_thread_tag
        arity = _positional_arity(add)
        if arity not in (2, None):
            raise TypeError(
                f"{getattr(agent, '__name__', agent)!r}.add_thread_tag takes {arity} arguments,"
                " not (key, value): PyroscopeSink needs pyroscope-io >= 1.4"
            )
        # pyroscope-io 1.x's public functions only forward to its native module: calling that
        # directly saves a Python frame on every label change, the hottest call we make.
        native = getattr(agent, "lib", None)
        if (
            native is not None
            and getattr(add, "__module__", None) == getattr(agent, "__name__", None)
            and callable(getattr(native, "add_thread_tag", None))
            and callable(getattr(native, "remove_thread_tag", None))
        ):
            add, remove = native.add_thread_tag, native.remove_thread_tag
        super().__init__(add, remove)
