"""The label sink of the built-in sampler: identity events instead of thread tags.

The runtime hooks call :meth:`EventSink.apply` wherever labels change (an OTel context
attach/detach, a worker-thread job starting or ending, a trio task step). This sink does not
tag the thread: it writes who now runs with which labels into the event ring, timestamped. Inside
an asyncio task that the sampler can see, the identity is the task; elsewhere it is the thread.
The task-creation hook (``_hooks.asyncio.task_identity``) adds each new task's labels, and span
renames and ends arrive through :meth:`labels_changed` (``engine.lifecycle``).

With wall-clock profiles on, the sink also tells the sampler when a task first runs after the
sampler began a read of every task (:data:`~.ring.RAN`): where a request waited changes only
when one of its tasks runs, so the time between two reads is split there, not guessed. It uses
``sys.monitoring``'s ``PY_RESUME`` event on the code of each task's coroutine (the outermost
frame, resumed once per step): one call per step of a watched task, a record only for a task's
first step since the last read. No free tool id, or any failure: reads guess again (INFO once).

Labels are interned: a labels tuple gets a small id the first time it is written (a
:data:`~.ring.DEFINE` record with its text), later records carry the id.

Until the sampler starts (and after it stops), nothing is written and every call is cheap.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from span_profiles._core.sinks import Labels, ThreadLabelSink
from span_profiles._samplers.builtin import ring

__all__ = ["EventSink"]

logger = logging.getLogger("span_profiles")

_IN_TASK: Labels = (("", ""),)
"""Stands in the thread's "applied" entry after a task-scoped write: never ``is`` a real labels
tuple, so the next change on this thread is written again (the hooks compare by identity)."""

_get_ident = threading.get_ident
_get_native_id = threading.get_native_id
_running_loop = asyncio.events._get_running_loop
_current_task = asyncio.current_task
_monitoring: Any = getattr(sys, "monitoring", None)  # CPython 3.12+

TASKS_ON_EVERY_THREAD = sys.version_info >= (3, 15)
"""CPython 3.15's reader sees the running task of loops on every thread; 3.14's only on the
main thread (elsewhere the sampler attributes by thread)."""


def _no_write(kind: int, ident: int, aux: int) -> None:
    return None


def _no_tag(key: str, value: str) -> None:
    return None


class EventSink(ThreadLabelSink):
    """Writes label changes as identity events into the built-in sampler's ring."""

    def __init__(self) -> None:
        super().__init__(_no_tag, _no_tag)
        self._write: Callable[[int, int, int], None] = _no_write
        self._define: Callable[[int, Labels], None] | None = None
        self._ids: dict[Labels, int] = {}
        self._next_id = itertools.count(1)
        self._main = threading.main_thread().ident
        self._other_loop_logged = False
        self._resumes: _Resumes | None = None
        self.active = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.detach)

    def attach(self, writer: ring.RingWriter, *, steps: bool = False) -> None:
        """Write into ``writer`` from now on (the sampler started); with ``steps``, also each
        task's first step since the sampler's last read of every task."""
        self._ids.clear()
        self._applied.clear()
        self._define = writer.define
        self._write = writer.write
        self.active = True
        if steps and self._resumes is None:
            self._resumes = _Resumes.start(writer.write, writer.read_started)

    def detach(self) -> None:
        """Stop writing (the sampler stopped or failed, or this is a forked child)."""
        self.active = False
        self._write = _no_write
        self._define = None
        self._ids.clear()
        resumes, self._resumes = self._resumes, None
        if resumes is not None:
            resumes.stop()

    def _lid(self, labels: Labels) -> int:
        if not labels:
            return 0
        lid = self._ids.get(labels)
        if lid is None:
            fresh = next(self._next_id)
            lid = self._ids.setdefault(labels, fresh)
            define = self._define
            if lid == fresh and define is not None:
                define(lid, labels)
        return lid

    def _task(self) -> Any:
        if _running_loop() is None:
            return None
        if not TASKS_ON_EVERY_THREAD and _get_ident() != self._main:
            if not self._other_loop_logged:
                self._other_loop_logged = True
                logger.info(
                    "span-profiles: an asyncio loop runs on thread %s, not the main thread; on "
                    "Python 3.14 the built-in sampler sees the running task of the main thread's "
                    "loop only, so this loop's samples take the thread's labels at its last "
                    "context change (not exact across its task switches; 3.15 reads every loop)",
                    threading.current_thread().name,
                )
            return None
        return _current_task()

    def apply(self, labels: Labels, /) -> None:
        """The calling thread (or its running task) runs with ``labels`` from now on."""
        if not self.active:
            return
        lid = self._lid(labels)
        task = self._task()
        if task is not None:
            self._write(ring.TASK, id(task), lid)
            self._applied[_get_ident()] = _IN_TASK
            return
        self._write(ring.THREAD, _get_native_id(), lid)
        if labels:
            self._applied[_get_ident()] = labels
        else:
            self._applied.pop(_get_ident(), None)

    def task_created(self, task: Any, labels: Labels) -> None:
        """A new task starts with ``labels`` (its context's)."""
        if self.active:
            self._write(ring.TASK, id(task), self._lid(labels))
            resumes = self._resumes
            if resumes is not None:
                resumes.watch(task)

    def eager_begin(self, labels: Labels) -> None:
        """A task with ``labels`` is being created here; its first step may run inside."""
        if self.active:
            self._write(ring.EAGER, _get_native_id(), self._lid(labels))

    def eager_end(self) -> None:
        """The creation that :meth:`eager_begin` announced returned."""
        if self.active:
            self._write(ring.EAGER_END, _get_native_id(), 0)

    def labels_changed(self, old: Labels, new: Labels) -> None:
        """A span was renamed (``new``) or ended (``new`` empty): its labels id follows."""
        lid = self._ids.pop(old, None)
        if lid is None or not self.active:
            return
        if new:
            self._write(ring.RENAME, lid, self._lid(new))
        else:
            self._write(ring.END, lid, 0)

    def switch_off(self) -> None:
        """After a failure: write nothing more."""
        self.detach()


class _Resumes:
    """Records each task's first step since the sampler last began reading every task."""

    def __init__(self, tool: int, write: Callable[[int, int, int], None], stamp: Any) -> None:
        self.tool = tool
        self._codes: set[Any] = set()
        self._failed = False
        self.callback = self._make_callback(write, stamp)

    @classmethod
    def start(cls, write: Callable[[int, int, int], None], stamp: Any) -> _Resumes | None:
        """Claim a ``sys.monitoring`` tool id and register the callback (``None``: not
        possible here, reads guess where a request moved)."""
        monitoring = _monitoring
        if monitoring is None:
            return None
        for tool in (monitoring.PROFILER_ID, 3, 4):
            if monitoring.get_tool(tool) is None:
                try:
                    monitoring.use_tool_id(tool, "span-profiles")
                except ValueError:
                    continue  # taken meanwhile
                resumes = cls(tool, write, stamp)
                monitoring.register_callback(tool, monitoring.events.PY_RESUME, resumes.callback)
                return resumes
        logger.info(
            "span-profiles: no free sys.monitoring tool id; wall-clock profiles place a "
            "request's moves between two reads of its tasks by halves"
        )
        return None

    def _make_callback(
        self, write: Callable[[int, int, int], None], stamp: Any
    ) -> Callable[[Any, int], None]:
        seen: set[int] = set()
        read = [0]
        ran = ring.RAN

        def resumed(
            code: Any,
            offset: int,
            _loop: Callable[[], Any] = _running_loop,
            _task: Callable[[Any], Any] = _current_task,
        ) -> None:
            # Runs inside the app's coroutines: it must never raise into them.
            try:
                loop = _loop()
                if loop is None:
                    return
                task = _task(loop)
                if task is None:
                    return
                started = stamp[0]
                if started != read[0]:
                    read[0] = started
                    seen.clear()
                key = id(task)
                if key in seen:
                    return
                seen.add(key)
                write(ran, key, 0)
            except Exception as exc:  # pragma: no cover - defensive
                self._fail(exc)

        return resumed

    def watch(self, task: Any) -> None:
        """Have ``task``'s steps recorded (through the code of its coroutine)."""
        code = getattr(getattr(task, "get_coro", _none)(), "cr_code", None)
        if code is None or code in self._codes or self._failed:
            return
        self._codes.add(code)
        try:
            _monitoring.set_local_events(self.tool, code, _monitoring.events.PY_RESUME)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            logger.info(
                "span-profiles: recording task steps for wall-clock profiles failed (%r); "
                "reads place a request's moves by halves from now on",
                exc,
            )
            self.stop()

    def stop(self) -> None:
        """Stop recording and give the tool id back."""
        monitoring = _monitoring
        try:
            monitoring.register_callback(self.tool, monitoring.events.PY_RESUME, None)
            clear = getattr(monitoring, "clear_tool_id", None)
            if clear is not None:
                clear(self.tool)
            monitoring.free_tool_id(self.tool)
        except ValueError:
            pass  # already given back
        self._codes.clear()


def _none() -> None:
    return None
