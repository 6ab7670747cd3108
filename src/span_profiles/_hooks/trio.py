"""trio: an ``Instrument`` whose ``before_task_step`` shows the labels of the task's context,
and whose ``before_io_wait`` clears them for the scheduler's own work between batches.

Instruments belong to one ``trio.run``; :meth:`LabelInstrument.add_to_current_run` adds ours to
the run it is called from, at most once (its own ``RunVar`` remembers), at install and whenever a local
root span starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import trio

from span_profiles._core import engine, guard
from span_profiles._core.engine import HotPath
from span_profiles._core.sinks import EMPTY, Labels
from span_profiles._hooks import no_undo


class LabelInstrument(trio.abc.Instrument):
    """Shows each task's labels before each of its steps."""

    def __init__(self, hot: HotPath, var: ContextVar[Any]) -> None:
        self.active = True
        self._added: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar(
            f"span_profiles_instrument_{id(self)}", default=False
        )
        """Whether this instrument is in the current run (each run has its own value)."""
        # trio looks the hook up on the instance, so a closure over the hot path replaces the
        # method: the per-step path does local lookups only.
        self.before_task_step = self._make_step(hot, var)  # type: ignore[method-assign,assignment]
        self.before_io_wait = self._make_io_wait(hot)  # type: ignore[method-assign,assignment]

    def _make_step(
        self, hot: HotPath, var: ContextVar[Any]
    ) -> Callable[[trio.lowlevel.Task], None]:
        def before_task_step(
            task: trio.lowlevel.Task,
            _var: ContextVar[Any] = var,
            _key: str = hot.key,
            _holder: Callable[[Any], Any] = hot.holder,
            _applied: Callable[[int, Labels], Labels] = hot.applied,
            _ident: Callable[[], int] = threading.get_ident,
            _sink_apply: list[Callable[[Labels], None]] = hot.apply,
            _empty: Labels = EMPTY,
        ) -> None:
            if not self.active:
                return
            # kernel: keep in step with engine.refresh_from
            try:
                otel = task.context.get(_var)
                holder = _holder(otel.get(_key)) if otel is not None else None
                labels = _empty if holder is None else holder.labels
                if _applied(_ident(), _empty) is not labels:
                    try:
                        _sink_apply[0](labels)
                    except Exception as exc:
                        engine.sink_failed(exc)
            except Exception as exc:
                guard.fail("the trio step hook", exc, self._off)

        return before_task_step

    def _make_io_wait(self, hot: HotPath) -> Callable[[float], None]:
        def before_io_wait(
            timeout: float,
            _applied: Callable[[int, Labels], Labels] = hot.applied,
            _ident: Callable[[], int] = threading.get_ident,
            _sink_apply: list[Callable[[Labels], None]] = hot.apply,
            _empty: Labels = EMPTY,
        ) -> None:
            # A scheduler batch is done: polling and processing I/O serve no request. Once per
            # batch, not per step, so consecutive steps of one request make no agent call.
            if self.active and _applied(_ident(), _empty) is not _empty:
                try:
                    _sink_apply[0](_empty)
                except Exception as exc:
                    engine.sink_failed(exc)

        return before_io_wait

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """Refresh the labels from ``task.context`` (replaced per instance in ``__init__``)."""

    def before_io_wait(self, timeout: float) -> None:
        """Clear the labels before trio polls for I/O (replaced per instance in ``__init__``)."""

    def _off(self) -> None:
        self.active = False

    def add_to_current_run(self) -> None:
        """Add the instrument to the trio run this is called from (no-op outside trio, or if done)."""
        if not self.active:
            return
        # Raising and catching RuntimeError costs microseconds; asyncio apps pass here on every root.
        in_trio_run = getattr(trio.lowlevel, "in_trio_run", None)
        if in_trio_run is not None and not in_trio_run():
            return
        try:
            if self._added.get():
                return
        except RuntimeError:
            return  # not inside trio.run
        trio.lowlevel.add_instrument(self)
        self._added.set(True)

    def undo(self) -> None:
        """Switch the instrument off, and remove it from the current run if called inside one."""
        self.active = False
        try:
            if self._added.get():
                trio.lowlevel.remove_instrument(self)
                self._added.set(False)
        except (RuntimeError, KeyError):
            pass


def install(hot: HotPath) -> Callable[[], None]:
    """Create the instrument and add it to the current run, if any, and to each run a root starts in."""
    if hot.var is None:
        return no_undo
    instrument = LabelInstrument(hot, hot.var)
    hot.root_started.append(instrument.add_to_current_run)
    instrument.add_to_current_run()
    return instrument.undo
