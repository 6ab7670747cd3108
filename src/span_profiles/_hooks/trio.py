"""trio: an ``Instrument`` whose ``before_task_step`` shows the labels of the task's context.

Instruments belong to one ``trio.run``; :func:`ensure_current_run` adds ours to the run it is
called from, at most once (a ``RunVar`` remembers), and is called from ``instrument()`` and
whenever a local root span starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import trio

from span_profiles._core import engine, guard
from span_profiles._core.sinks import EMPTY, Labels

_installed: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("span_profiles_hooked", default=False)


class LabelInstrument(trio.abc.Instrument):
    """Shows each task's labels before each of its steps."""

    def __init__(self, var: ContextVar[Any]) -> None:
        self.active = True
        # trio looks the hook up on the instance, so a closure over the current sink's
        # bookkeeping replaces the method: the per-step path does local lookups only.
        self.before_task_step = self._make_step(var)  # type: ignore[method-assign,assignment]

    def _make_step(self, var: ContextVar[Any]) -> Callable[[trio.lowlevel.Task], None]:
        def before_task_step(
            task: trio.lowlevel.Task,
            _var: ContextVar[Any] = var,
            _key: str = engine.SPAN_KEY,
            _holder: Callable[[Any], Any] = engine._holders_get,
            _applied: Callable[[int, Labels], Labels] = engine._applied_get,
            _ident: Callable[[], int] = threading.get_ident,
            _sink_apply: list[Callable[[Labels], None]] = engine._sink_apply,
            _empty: Labels = EMPTY,
        ) -> None:
            if not self.active:
                return
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

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """Refresh the labels from ``task.context`` (replaced per instance in ``__init__``)."""

    def _off(self) -> None:
        self.active = False


_instrument: LabelInstrument | None = None


def ensure_current_run() -> None:
    """Add the instrument to the trio run this is called from (no-op outside trio, or if done)."""
    instrument = _instrument
    if instrument is None or not instrument.active:
        return
    # Raising and catching RuntimeError costs microseconds; asyncio apps pass here on every root.
    in_trio_run = getattr(trio.lowlevel, "in_trio_run", None)
    if in_trio_run is not None and not in_trio_run():
        return
    try:
        if _installed.get():
            return
    except RuntimeError:
        return  # not inside trio.run
    trio.lowlevel.add_instrument(instrument)
    _installed.set(True)


def install(var: ContextVar[Any]) -> None:
    """Create the instrument and add it to the current run, if any."""
    global _instrument
    _instrument = LabelInstrument(var)
    engine.span_started_hooks.append(ensure_current_run)
    ensure_current_run()


def uninstall() -> None:
    """Switch the instrument off, and remove it from the current run if called inside one."""
    global _instrument
    instrument = _instrument
    _instrument = None
    if instrument is None:
        return
    instrument.active = False
    try:
        if _installed.get():
            trio.lowlevel.remove_instrument(instrument)
            _installed.set(False)
    except (RuntimeError, KeyError):
        pass
