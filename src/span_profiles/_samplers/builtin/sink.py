"""The label sink of the built-in sampler: identity events instead of thread tags.

The runtime hooks call :meth:`EventSink.apply` wherever labels change (an OTel context
attach/detach, a worker-thread job starting or ending, a trio task step). This sink does not
tag the thread: it writes who now runs with which labels into the event ring, timestamped. Inside
an asyncio task that the sampler can see, the identity is the task; elsewhere it is the thread.
The task-creation hook (``_hooks.asyncio.task_identity``) adds each new task's labels, and span
renames and ends arrive through :meth:`labels_changed` (``engine.lifecycle``).

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
        self.active = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.detach)

    def attach(self, writer: ring.RingWriter) -> None:
        """Write into ``writer`` from now on (the sampler started)."""
        self._ids.clear()
        self._applied.clear()
        self._define = writer.define
        self._write = writer.write
        self.active = True

    def detach(self) -> None:
        """Stop writing (the sampler stopped or failed, or this is a forked child)."""
        self.active = False
        self._write = _no_write
        self._define = None
        self._ids.clear()

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
