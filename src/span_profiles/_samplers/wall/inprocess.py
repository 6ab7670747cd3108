"""Wall-clock profiles from inside the app: pyroscope-io's path (CPython 3.10-3.14).

py-spy (inside pyroscope-io) cannot give a request's waiting time: it samples threads, not
suspended tasks, and its samples go straight to the server. So the wall profile is made here,
from three sources, each bounded per read at any number of in-flight tasks:

**Suspended tasks, walked from their own event loop.** A tick (``loop.call_later`` at
``sample_rate``, in an empty context so that it is no request's work) visits requests in turn
(:class:`~.account.RoundRobin`) until its time budget (:data:`TICK_BUDGET_NS`) is spent, and at
most :data:`TASKS_PER_VISIT` tasks of each; the budget also stops a visit between two tasks (the
rest of its slice is read first next time). While the tick runs no task does, so every task's
await chain (``cr_await`` / ``gi_yieldfrom`` down from its coroutine) is a consistent snapshot,
and nothing waits for the GIL. Chains of child tasks are put under the chain of the task that
awaits them (``await task``, ``gather``, ``TaskGroup``, ``asyncio.wait``: found through the
child's done callbacks), and a task that awaits another of its request's tasks is not itself a
place where time goes: known from a child read in the same visit, or from an earlier visit's
child while the parent still awaits the same object (so a visit cut short keeps it right). A
finished request's tasks are let go of when its span ends if they are few, else a few per tick
(freeing them is work too), and nothing of it is held past a tick that finishes it. A request's
worker threads running its jobs are what its tasks wait for: while it has any, its waiting time
goes to their stacks (``sys._current_frames()``), put under the chain of the request's one
waiting task when it has one.

**The on-CPU part, timed from label changes.** The per-step hooks already change the loop
thread's labels when a request's work starts and when it stops (:mod:`span_profiles._hooks`);
the observer (``engine.set_observer``) reads the clock at each change, so the time each request
ran on a loop thread is known exactly, with no work on the steps whose labels do not change.
Its stack is coarse: the frames live throughout the interval (the common part of a task's await
chains at two visits) under a marker frame ``[on CPU]``; which functions below them burnt it is
the CPU profile's to say.

**Weighting** is :class:`~.account.Account`'s: elapsed time between visits, less the on-CPU
time, so that a request's wall total is its duration however often it is visited; it counts
from the span's start (its time before its labels first show, the span's own start, goes to
where it first ran: ``[on CPU]``). Tasks are
found when the request's labels first show on a loop thread (the task that started the span)
and when a task is created in the request's context (``engine.observer``'s ``task_created``).
Requests without a loop (a WSGI request on a worker thread) are visited from the upload thread,
their threads' stacks read with ``sys._current_frames()``; there a thread on CPU is seen where it
last let go of the GIL.

One pprof profile per ``upload_interval`` (sample type ``wall``/``nanoseconds``, period the
tick), series ``__name__=wall`` with the CPU profile's series labels, pushed by a thread of its
own with the agent's server, auth, tenant and headers; the exit flush shares
``shutdown_timeout`` with the agent's.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from span_profiles._core import engine, guard
from span_profiles._core.sinks import Labels
from span_profiles._hooks.asyncio import StepCoroutine
from span_profiles._samplers.pprof import Frame, ProfileBuilder, push_request
from span_profiles._samplers.push import Pusher, PushError
from span_profiles._samplers.wall.account import Account, RoundRobin
from span_profiles._settings import Settings

__all__ = [
    "LEAST_READS",
    "ON_CPU",
    "TASKS_PER_VISIT",
    "TICK_BUDGET_NS",
    "InProcessWall",
    "awaiter",
    "chain",
]

logger = logging.getLogger("span_profiles")

ON_CPU: Frame = ("<span-profiles>", "[on CPU]", 0)
"""The leaf under which the on-CPU part of a request shows on this path."""

TICK_BUDGET_NS = 200_000
"""A tick reads no further task once it has run this long (the loop waits meanwhile): it ends the
visit it is in (once :data:`LEAST_READS` tasks are read) and starts no other."""

LEAST_READS = 4
"""Tasks a visit reads whatever the budget: a task read for the first time has the children it
made behind it (creation order), and a parent is known to wait on them when one is read with it."""

TASKS_PER_VISIT = 32
"""Tasks of one request read per visit (a request with more is read a slice at a time)."""

_MAX_DEPTH = 256
_START_GAP_NS = 1_000_000_000
_ENDED_BACKLOG = 64
_DROPS = 32
_LATE = 32
"""A tick this many periods late or more lets go of that many times :data:`_DROPS` tasks."""
_AWAITERS = 8
_get_ident = threading.get_ident
_running_loop = asyncio.events._get_running_loop
_now = time.monotonic_ns
_cpu_now = time.thread_time_ns

try:
    from resource import RUSAGE_THREAD, getrusage

    def _switches() -> tuple[int, int]:
        """The calling thread's context switches so far, involuntary (another thread or process
        took its CPU) and voluntary (it waited: for the GIL, a lock, I/O); Linux."""
        usage = getrusage(RUSAGE_THREAD)
        return usage.ru_nivcsw, usage.ru_nvcsw

except ImportError:  # not Linux: preemption is not told apart

    def _switches() -> tuple[int, int]:
        return 0, 0


Stack = tuple[Frame, ...]
"""Leaf first, as pprof wants."""


class _Request:
    """One in-flight request as the observer knows it."""

    __slots__ = (
        "cpu",
        "cpu_stack",
        "ended",
        "keys",
        "labels",
        "loop",
        "moved",
        "parents",
        "settled",
        "shown",
        "tasks",
        "threads",
    )

    def __init__(self, labels: Labels, loop: Any) -> None:
        self.labels = labels
        self.keys: list[Labels] = [labels]
        """Every labels tuple it had (renames): kept alive, so their ids stay its own."""
        self.loop = loop
        """The event loop whose tick visits it (``None``: threads only)."""
        self.tasks: dict[Any, _Seen | None] = {}
        """Task -> where its last visit found it (``None``: not visited yet)."""
        self.parents: dict[Any, Any] = {}
        """Task found awaiting another of its tasks -> the object it awaited then: while it
        still awaits that object, it waits on a child even in a visit that reads no child."""
        self.threads: set[int] = set()
        """Threads running one of its jobs now (``threading.get_ident()``)."""
        self.cpu = 0
        """Nanoseconds on a loop thread since its last visit."""
        self.cpu_stack: Stack = (ON_CPU,)
        self.moved = 0
        """When its work first ran again since its last visit (0: it did not)."""
        self.settled = 0
        """When it last stopped running on a loop thread, or a job of it started or ended."""
        self.shown: tuple[Labels, Labels] = ((), ())
        """Its labels, and the sample labels made from them (with ``pid``)."""
        self.ended = 0


class _Seen:
    """A task as its last read found it: its await chain and the stacks made from it."""

    __slots__ = ("below", "coros", "cpu", "frame", "lasti", "stack", "stitched", "waits_on")

    def __init__(
        self, coros: tuple[Any, ...], frame: FrameType | None, stack: Stack, cpu: Stack
    ) -> None:
        self.coros = coros
        self.frame = frame
        self.lasti = frame.f_lasti if frame is not None else -1
        self.waits_on = _awaited(coros[-1]) if coros else None
        self.stack = stack
        """Its chain, leaf first."""
        self.cpu = cpu
        """Where its on-CPU time shows: the frames live since the read before, under
        :data:`ON_CPU`."""
        self.below: Stack = ()
        self.stitched: Stack = stack

    def unchanged(self) -> bool:
        """Whether the task is still where it was read (its innermost coroutine, suspended at
        the same instruction, awaiting the same object): then its whole chain is too."""
        frame = self.frame
        if frame is None or frame.f_lasti != self.lasti:
            return False
        coro = self.coros[-1]
        owner = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        owner = owner or getattr(coro, "ag_frame", None)
        return owner is frame and _awaited(coro) is self.waits_on


def _span_start(labels: Labels, now: int) -> int:
    """When the span behind ``labels`` started, on the monotonic clock (``now`` when that span
    is not the current one): a request's time counts from its span's start, not from its labels'
    first showing. Between the two the span's own start runs, and a collection that its
    allocations set off there (35-49 ms in the accuracy benchmark) was counted nowhere: spans
    at 81-85 % coverage. At most :data:`_START_GAP_NS` before ``now``."""
    holder = engine.current_holder()
    if holder is None or holder.labels is not labels:
        return now
    start = getattr(holder.span, "start_time", None)
    if not isinstance(start, int):
        return now
    return now - min(max(time.time_ns() - start, 0), _START_GAP_NS)


def _in_trio() -> bool:
    """Whether this thread runs a trio event loop (trio imported and running here)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        return bool(trio.lowlevel.in_trio_run())
    except AttributeError:  # trio < 0.23 has no in_trio_run; ours needs >= 0.25
        return False


def _awaited(coro: Any) -> Any:
    for name in ("cr_await", "gi_yieldfrom", "ag_await"):
        value = getattr(coro, name, _MISSING)
        if value is not _MISSING:
            return value
    return None


_MISSING = object()


def _unwrap(coro: Any) -> Any:
    return coro._coro if isinstance(coro, StepCoroutine) else coro


def chain(task: Any) -> tuple[tuple[Any, ...], list[FrameType]]:
    """The await chain of a suspended task: its coroutines and their frames, outermost first
    (down to where it waits: the last coroutine or generator that has a frame)."""
    coros: list[Any] = []
    frames: list[FrameType] = []
    coro = _unwrap(task.get_coro())
    while coro is not None and len(frames) < _MAX_DEPTH:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            following = coro.cr_await
        else:
            frame = getattr(coro, "gi_frame", None)
            if frame is not None:
                following = coro.gi_yieldfrom
            else:
                frame = getattr(coro, "ag_frame", None)
                if frame is None:
                    break
                following = coro.ag_await
        coros.append(coro)
        frames.append(frame)
        coro = following
    return tuple(coros), frames


def awaiter(task: Any) -> Any | None:
    """The task that waits for ``task`` to finish, from its done callbacks: a task awaiting it
    (its wake-up method), a ``TaskGroup`` (its parent task), or a future that a task awaits
    (``gather``'s outer future, ``asyncio.wait``'s waiter, found in the callback's closure)."""
    for callback, _ in task._callbacks or ():
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            return owner
        parent = getattr(owner, "_parent_task", None)
        if isinstance(parent, asyncio.Task):
            return parent
        for cell in getattr(callback, "__closure__", None) or ():
            try:
                held = cell.cell_contents
            except ValueError:
                continue
            if isinstance(held, asyncio.Future) and held is not task:
                for outer, _ in held._callbacks or ():
                    waiter = getattr(outer, "__self__", None)
                    if isinstance(waiter, asyncio.Task):
                        return waiter
    return None


class InProcessWall:
    """The observer, the ticks and the uploads of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._running = False
        self._pid = 0
        self.stats: dict[str, int] = {}
        """Counters: ``ticks``, ``visits``, ``longest_tick_ns`` (on the clock: the machine's
        preemption and garbage collections during a tick included), ``longest_tick_cpu_ns`` (the
        loop thread's CPU time in it), ``longest_tick_work_ns`` (that CPU time less the
        collections that ran meanwhile: the tick's own work), ``ticks_over_1ms`` (on the clock),
        ``ticks_preempted`` (ticks in which the loop thread was switched out involuntarily: another
        thread or process took its CPU; Linux), ``ticks_waited`` (the others in which it waited:
        for the GIL held by another thread, a lock), ``longest_unswitched_tick_ns`` (on the
        clock, over the ticks in which it was never switched out: collections and a virtual
        machine's stolen time still included), ``uploads``, ``failures``."""
        self._gc_ns = 0
        """Nanoseconds spent in garbage collections while running (any thread)."""
        self._gc_began = 0

    # -- lifetime ----------------------------------------------------------------------------

    def running(self) -> bool:
        """Whether it records in this process."""
        return self._running and self._pid == os.getpid()

    def start(self, settings: Settings, application_name: str, *, upload: bool = True) -> bool:
        """Observe label changes from now on and upload every ``upload_interval``
        (``upload=False``: keep the samples for :meth:`take`; tests and benchmarks)."""
        if self.running():
            return True
        self.settings = settings
        self.period_ns = 1_000_000_000 // settings.sample_rate
        self._period_s = self.period_ns / 1e9
        self._line_no = settings.line_no
        self.account = Account(self._emit)
        self._requests: dict[int, _Request] = {}
        """``id(labels)`` -> its request, for every labels tuple a live request had."""
        self._open: dict[int, tuple[_Request, int]] = {}
        """Loop thread -> the request whose work it runs, since when."""
        self._queues: dict[Any, RoundRobin[_Request]] = {}
        self._threads_only = RoundRobin[_Request]()
        self._dropped: deque[dict[Any, Any]] = deque()
        """The tasks of finished requests, let go of a few per tick (:meth:`_drop_some`)."""
        self._last_tick: dict[Any, int] = {}
        """Loop -> when its last tick began."""
        self._ended: deque[_Request] = deque()
        """Requests whose span ended, to be finished by the next tick (appended by any thread)."""
        self._frames: dict[tuple[Any, int], Frame] = {}
        self._stacks: dict[Stack, Stack] = {}
        """One object per distinct stack (:meth:`_intern`)."""
        self._stitched: dict[tuple[int, int], tuple[Stack, Stack, Stack]] = {}
        """``(id(stack), id(outer))`` -> ``(stack, outer, stack under outer)``: each child read
        afresh is put under its parent without hashing the two (the pair is kept: an id is
        only good while its object lives)."""
        self._trio: dict[int, Labels] = {}
        """``id(labels)`` -> labels (kept alive) of the trio requests in flight: left out."""
        self._lock = threading.Lock()
        """Guards the account (ticks, the upload thread, stop)."""
        self._window_lock = threading.Lock()
        self._window: dict[tuple[int, int], int] = {}
        """``(id(stack), id(labels))`` -> nanoseconds."""
        self._held: dict[int, Any] = {}
        """``id(obj)`` -> ``obj`` for the stacks and labels in :attr:`_window` (their ids stay
        theirs): one container per window, not one object per entry for every collection
        to scan while the window fills."""
        self._window_start = time.time_ns()
        self._context = contextvars.Context()
        self._stop = threading.Event()
        self._failed_once = False
        self.stats = dict.fromkeys(
            (
                "ticks",
                "visits",
                "longest_tick_ns",
                "longest_tick_cpu_ns",
                "longest_tick_work_ns",
                "ticks_over_1ms",
                "ticks_preempted",
                "ticks_waited",
                "longest_unswitched_tick_ns",
                "uploads",
                "failures",
            ),
            0,
        )
        self.series = {
            "__name__": "wall",
            **settings.tags,
            "service_name": application_name,
            "otel.scope.name": "span-profiles/wall",
            "process.runtime.name": sys.implementation.name,
            "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        }
        self._extra: Labels = (("pid", str(os.getpid())),) if settings.report_pid else ()
        self._pusher = Pusher(
            settings.server_address,
            settings.basic_auth_username,
            settings.basic_auth_password,
            settings.tenant_id,
            settings.http_headers,
            user_agent="span-profiles wall",
        )
        self._pid = os.getpid()
        self._running = True
        self._uploader: threading.Thread | None = None
        if upload:
            self._uploader = threading.Thread(
                target=self._upload_loop, name="span-profiles-wall", daemon=True
            )
            self._uploader.start()
        engine.set_observer(self)
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        return True

    def stop(self, deadline: float) -> bool:
        """Stop observing; upload what is held until ``deadline`` (``time.monotonic()``)."""
        if not self.halt():
            return False
        return self.join(deadline)

    def halt(self) -> bool:
        """Stop observing and start the last upload (:meth:`join` waits for it); whether it
        was running."""
        if not self.running():
            return False
        self._switch_off()
        with self._lock:
            now = _now()
            self._finish_ended()
            for request in {id(r): r for r in self._requests.values()}.values():
                self._give_cpu(request, now)
            self.account.end_all(now)
            self._requests.clear()
            self._dropped.clear()
        self._stop.set()
        return True

    def join(self, deadline: float) -> bool:
        """Wait for the last upload until ``deadline`` (``time.monotonic()``); whether it ended."""
        uploader = getattr(self, "_uploader", None)
        if uploader is None:
            return True
        uploader.join(max(0.0, deadline - time.monotonic()))
        if uploader.is_alive():
            logger.warning(
                "span-profiles: the wall-clock profile's exit flush to %s did not finish within "
                "shutdown_timeout; its last window is dropped",
                self.settings.server_address,
            )
            return False
        return True

    def _switch_off(self) -> None:
        self._running = False
        if engine.observer[0] is self:
            engine.set_observer(None)
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # A collection that lands in a tick (its allocations or anyone's may trigger one) is
        # the heap's cost, not the tick's work: counted apart (the benchmark reports both).
        if phase == "start":
            self._gc_began = _now()
        elif self._gc_began:
            self._gc_ns += _now() - self._gc_began
            self._gc_began = 0

    # -- the observer (any thread; called before the sink, inside the hooks) ------------------

    def changed(self, old: Labels, new: Labels) -> None:
        """The calling thread shows ``new`` instead of ``old`` from now on."""
        now = _now()
        ident = _get_ident()
        loop = _running_loop()
        if loop is not None:
            opened = self._open.pop(ident, None)
            if opened is not None:
                opened[0].cpu += now - opened[1]
                opened[0].settled = now
            if new:
                request = self._requests.get(id(new))
                if request is None or request.loop is not loop:
                    # Its first work on this loop: the task running now is one of its own
                    # (the one that started its span); the others arrive through task_created.
                    if request is None:
                        request = self._begin(new, loop, now)
                    else:
                        request.loop = loop
                        self._queue(loop, request)
                    task = asyncio.current_task(loop)
                    if task is not None and task not in request.tasks:
                        request.tasks[task] = None
                if not request.moved:
                    request.moved = now
                self._open[ident] = (request, now)
            return
        if (old and id(old) in self._trio) or (new and id(new) in self._trio):
            return  # a trio request's job thread: trio requests are left out (below)
        if _in_trio():
            # trio's thread. Its suspended tasks cannot be read from here, so its waiting time
            # would show on whatever its thread runs next: trio requests get no wall profile
            # (docs/wall.md), rather than a misplaced one.
            if new:
                self._trio[id(new)] = new
            return
        # A worker thread: a job starts (new) or ends (old); where its request waits changes.
        if old:
            request = self._requests.get(id(old))
            if request is not None:
                request.threads.discard(ident)
                request.settled = now
                if not request.moved:
                    request.moved = now
        if new:
            request = self._requests.get(id(new))
            if request is None:
                request = self._begin(new, None, now)
            request.threads.add(ident)
            request.settled = now
            if not request.moved:
                request.moved = now

    def task_created(self, task: Any, labels: Labels) -> None:
        """A task was created in a context with ``labels``: it works for that request."""
        request = self._requests.get(id(labels))
        if request is None:
            loop = _running_loop()
            if loop is None:
                return
            request = self._begin(labels, loop, _now())
        request.tasks[task] = None

    def labels_changed(self, old: Labels, new: Labels) -> None:
        """A request was renamed (``new``) or ended (``new`` empty)."""
        if self._trio.pop(id(old), None) is not None:
            if new:
                self._trio[id(new)] = new
            return
        request = self._requests.get(id(old))
        if request is None:
            return
        if new:
            request.labels = new
            request.keys.append(new)
            self._requests[id(new)] = request
            return
        request.ended = _now()
        for labels in request.keys:
            self._requests.pop(id(labels), None)
        if len(request.tasks) <= _DROPS:
            # Let go of its tasks now: held until a tick, finished ones outlive their request
            # (on a saturated loop, ticks are rare: 4,000 tasks with their coroutines and
            # contexts were held at 1,000 in flight, and every collection scanned them). More
            # are let go of a few per tick (:meth:`_drop_some`).
            request.tasks = {}
            request.parents = {}
        self._ended.append(request)

    def _begin(self, labels: Labels, loop: Any, now: int) -> _Request:
        request = _Request(labels, loop)
        self._requests[id(labels)] = request
        self.account.begin(request, labels, _span_start(labels, now))
        if loop is not None:
            self._queue(loop, request)
        else:
            self._threads_only.add(request)
        return request

    def _queue(self, loop: Any, request: _Request) -> None:
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = RoundRobin[_Request]()
            # The tick is no request's work: an empty context, so no labels.
            loop.call_later(self._period_s, self._tick, loop, context=self._context)
        queue.add(request)

    # -- ticks (on each loop thread) -----------------------------------------------------------

    def _tick(self, loop: Any) -> None:
        if not self._running:
            return
        began = _now()
        began_cpu = _cpu_now()
        switches = _switches()
        gc_before = self._gc_ns
        until = began + TICK_BUDGET_NS
        queue = self._queues.get(loop)
        try:
            with self._lock:
                finished = self._finish_ended(until)
                if queue is not None and not (finished and _now() >= until):
                    # Spent on ended requests: the others wait a tick (their weights do not).
                    self._visit_some(queue, loop, until)
                last = self._last_tick.get(loop, began)
                self._drop_some(until, min(max((began - last) // self.period_ns, 1), _LATE))
                self._last_tick[loop] = began
        except Exception as exc:
            guard.fail("the wall-clock profile", exc, self._switch_off)
            return
        took = _now() - began
        took_cpu = _cpu_now() - began_cpu
        work = took_cpu - (self._gc_ns - gc_before)
        stats = self.stats
        stats["ticks"] += 1
        if took > stats["longest_tick_ns"]:
            stats["longest_tick_ns"] = took
        if took_cpu > stats["longest_tick_cpu_ns"]:
            stats["longest_tick_cpu_ns"] = took_cpu
        if work > stats["longest_tick_work_ns"]:
            stats["longest_tick_work_ns"] = work
        if took > 1_000_000:
            stats["ticks_over_1ms"] += 1
        involuntary, voluntary = _switches()
        if involuntary != switches[0]:
            stats["ticks_preempted"] += 1
        elif voluntary != switches[1]:
            stats["ticks_waited"] += 1
        elif took > stats["longest_unswitched_tick_ns"]:
            stats["longest_unswitched_tick_ns"] = took
        if queue is None:
            return
        if not len(queue) and not self._ended and not self._dropped:
            self._queues.pop(loop, None)  # idle: the next request on this loop starts it again
            self._last_tick.pop(loop, None)
            return
        loop.call_later(self._period_s, self._tick, loop, context=self._context)

    def _visit_some(self, queue: RoundRobin[_Request], loop: Any, until: int) -> None:
        threads: dict[int, FrameType] | None = None
        for request in queue.take(len(queue)):
            if request.ended or request.loop is not loop:
                queue.discard(request)
                continue
            if threads is None and request.threads:
                threads = sys._current_frames()
            self._visit(request, threads, until)
            self.stats["visits"] += 1
            if _now() >= until:
                break

    def _finish_ended(self, until: int = 0) -> int:
        """Give ended requests their last interval (each up to its own end, whenever it is
        finished): all of them, or with ``until`` at least one (and an eighth of those beyond
        :data:`_ENDED_BACKLOG`), then more until ``until``; how many. A burst of ends is spread
        over ticks, and the backlog stays bounded at any request rate (within
        ``_ENDED_BACKLOG`` plus eight periods' worth of ends)."""
        ended = self._ended
        least = max(1, (len(ended) - _ENDED_BACKLOG) // 8)
        done = 0
        while ended:
            if until and done >= least and _now() >= until:
                break
            request = ended.popleft()
            owner = self._threads_only if request.loop is None else self._queues.get(request.loop)
            if owner is not None:
                owner.discard(request)
            self._give_cpu(request, request.ended)
            self.account.end(request, request.ended, request.moved, request.cpu_stack)
            if request.tasks:
                self._dropped.append(request.tasks)
                request.tasks = {}
            request.parents.clear()
            done += 1
        return done

    def _drop_some(self, until: int, periods: int = 1) -> None:
        # Ours may be the last references to a finished request's tasks: letting go of them
        # frees each task, its coroutine and its frames (~3 us a task here), so 10,000 of them
        # at once would stall the loop. At least _DROPS a period since the last tick (``periods``)
        # or a 64th of those held, more while the budget lasts. So what is held stays bounded
        # when ticks are late: on a saturated loop a tick comes once per loop iteration (5-10
        # a second at 1,000 in flight), and a fixed 32 a tick held 6,000-14,000 tasks after
        # 15 s, for every collection to scan.
        dropped = self._dropped
        if not dropped:
            return
        # One dict per request of more than _DROPS tasks (fewer are let go of at its end).
        least = max(_DROPS * periods, sum(map(len, dropped)) // 64)
        count = 0
        while dropped:
            tasks = dropped[0]
            while tasks and (count < least or _now() < until):
                tasks.popitem()
                count += 1
            if tasks:
                return
            dropped.popleft()

    def _give_cpu(self, request: _Request, at: int) -> None:
        if request.cpu:
            cpu, request.cpu = request.cpu, 0
            self.account.on_cpu(request, request.cpu_stack, self._labels(request), cpu, at)

    def _visit(
        self, request: _Request, threads: dict[int, FrameType] | None, until: int = 0
    ) -> None:
        # Cut by the tick's budget between two tasks (``until``; the rest of the slice stays in
        # front for the next visit): at 10,000 tasks a slice of fresh reads took 0.5-1.4 ms.
        # A parent read without its children is still known to wait on them (request.parents).
        tasks = request.tasks
        visited: list[tuple[Any, _Seen]] = []
        moved: _Seen | None = None
        for index, task in enumerate(list(itertools.islice(tasks, TASKS_PER_VISIT))):
            if until and index >= LEAST_READS and _now() >= until:
                break
            before = tasks.pop(task)
            if task.done():
                request.parents.pop(task, None)
                continue
            seen = self._read(task, before)
            tasks[task] = seen  # behind the others: the next visit reads the next slice
            visited.append((task, seen))
            if seen is not before and moved is None:
                moved = seen
        now = _now()
        if moved is not None:
            request.cpu_stack = moved.cpu
        self._give_cpu(request, now)
        leaves = self._leaf_stacks(visited, tasks, request.parents) if visited else []
        waits: list[Stack] = []
        if request.threads and threads is not None:
            # Its jobs are what its tasks wait for; under the one task that waits, if one does.
            below = leaves[0] if len(leaves) == 1 else ()
            for ident in list(request.threads):
                frame = threads.get(ident)
                if frame is not None:
                    waits.append(self._intern(self._thread_stack(frame) + below))
        if not waits:
            waits = leaves
        ran, request.moved = request.moved, 0
        self.account.visit(
            request, self._labels(request), now, waits, ran, request.settled, request.cpu_stack
        )

    def _read(self, task: Any, before: _Seen | None) -> _Seen:
        """Where ``task`` waits: ``before`` itself when it has not moved since (its innermost
        frame is where it was, awaiting the same object), else a fresh read."""
        if before is not None and before.unchanged():
            return before
        coros, frames = chain(task)
        stack = self._intern(self._stack(frames))
        depth = 1
        if before is not None:
            # The frames live throughout since the last read (the on-CPU part ran at or below
            # them): the coroutines both chains share.
            depth = 0
            for now_coro, then_coro in zip(coros, before.coros, strict=False):
                if now_coro is not then_coro:
                    break
                depth += 1
        cpu = self._intern((ON_CPU, *stack[len(stack) - max(depth, 1) :]))
        return _Seen(coros, frames[-1] if frames else None, stack, cpu)

    def _leaf_stacks(
        self,
        visited: list[tuple[Any, _Seen]],
        tasks: dict[Any, _Seen | None],
        parents: dict[Any, Any],
    ) -> list[Stack]:
        seen_of = {id(task): seen for task, seen in visited}
        above: dict[int, _Seen] = {}
        for task, _ in visited:
            parent = awaiter(task)
            if parent is None:
                continue
            outer = seen_of.get(id(parent)) or tasks.get(parent)
            if outer is None:
                outer = self._read(parent, None)
            above[id(task)] = outer
            if parent in tasks or id(parent) in seen_of:
                # Remembered while it awaits the same object: a later visit that reads it
                # without a child still knows (one of its own tasks: dropped when it ends).
                parents[parent] = outer.waits_on
        stacks: list[Stack] = []
        for task, seen in visited:
            awaited = parents.get(task, _MISSING)
            if awaited is not _MISSING:
                if awaited is seen.waits_on:
                    continue  # it waits on a child of its own
                del parents[task]  # it moved on since a child was found under it
            outer = above.get(id(task))
            if outer is None:
                stacks.append(seen.stack)
                continue
            if seen.below is not outer.stack:
                # Under the chain of the task awaiting it (one level: deeper awaiters are
                # above that one's own chain when it is read as a leaf of a parent's).
                seen.below = outer.stack
                seen.stitched = self._stitch(seen.stack, outer.stack)
            stacks.append(seen.stitched)
        return stacks

    def _stitch(self, stack: Stack, outer: Stack) -> Stack:
        key = (id(stack), id(outer))
        found = self._stitched.get(key)
        if found is not None and found[0] is stack and found[1] is outer:
            return found[2]
        stitched = self._intern(stack + outer)
        if len(self._stitched) > 100_000:
            self._stitched.clear()
        self._stitched[key] = (stack, outer, stitched)
        return stitched

    def _intern(self, stack: Stack) -> Stack:
        # Samples are keyed by the stack's identity (no hashing per sample): with one object per
        # distinct stack, the upload window holds an entry per request and place, not per task.
        # At 10,000 tasks it held ~10,000, which outlived young collections and set off full
        # collections of the whole heap, stalling the loop for 50-300 ms.
        found = self._stacks.setdefault(stack, stack)
        if len(self._stacks) > 100_000:
            self._stacks.clear()
            self._stitched.clear()
        return found

    def _stack(self, frames: list[FrameType]) -> Stack:
        """Outermost-first frames as a leaf-first pprof stack."""
        return tuple(self._frame(frame) for frame in reversed(frames))

    def _thread_stack(self, frame: FrameType | None) -> Stack:
        out: list[Frame] = []
        while frame is not None and len(out) < _MAX_DEPTH:
            out.append(self._frame(frame))
            frame = frame.f_back
        return tuple(out)

    def _frame(self, frame: FrameType) -> Frame:
        code = frame.f_code
        line = frame.f_lineno if self._line_no else 0
        key = (code, line or 0)
        found = self._frames.get(key)
        if found is None:
            name = getattr(code, "co_qualname", code.co_name)
            found = self._frames[key] = (code.co_filename, name, line or 0)
            if len(self._frames) > 100_000:
                self._frames.clear()
        return found

    def _labels(self, request: _Request) -> Labels:
        if not self._extra:
            return request.labels
        if request.shown[0] is not request.labels:
            request.shown = (request.labels, request.labels + self._extra)
        return request.shown[1]

    # -- output --------------------------------------------------------------------------------

    def _emit(self, stack: Stack, labels: Labels, value: int, at: int) -> None:
        # By identity: stacks and labels are reused objects (a task's stack is made once per
        # place it waits in), so no tuple of tuples is hashed per sample; the upload merges
        # equal ones.
        key = (id(stack), id(labels))
        with self._window_lock:
            window = self._window
            if key in window:
                window[key] += value
            else:
                window[key] = value
                held = self._held
                held[key[0]] = stack
                held[key[1]] = labels

    def _upload_loop(self) -> None:
        interval = float(self.settings.upload_interval)
        next_upload = time.monotonic() + interval
        while not self._stop.wait(self._period_s if len(self._threads_only) else 0.25):
            if len(self._threads_only):
                self._visit_threads_only()
            if time.monotonic() >= next_upload:
                next_upload += interval
                self._upload()
        self._upload()

    def _visit_threads_only(self) -> None:
        queue = self._threads_only
        try:
            with self._lock:
                # Bounded too: a loop's tick waits for this lock.
                until = _now() + TICK_BUDGET_NS
                self._finish_ended(until)
                self._drop_some(until)
                threads = sys._current_frames()
                for request in queue.take(len(queue)):
                    if request.ended or request.loop is not None:
                        queue.discard(request)
                        continue
                    waits = [
                        self._intern(self._thread_stack(threads[i]))
                        for i in request.threads
                        if i in threads
                    ]
                    self.account.visit(request, self._labels(request), _now(), waits)
                    if _now() >= until:
                        break
        except Exception as exc:
            guard.fail("the wall-clock profile", exc, self._switch_off)

    def take(self) -> dict[tuple[Stack, Labels], int]:
        """The samples since the last upload or take: ``(stack, labels) -> nanoseconds``."""
        with self._window_lock:
            batch, self._window = self._window, {}
            held, self._held = self._held, {}
            self._window_start = time.time_ns()
        merged: dict[tuple[Stack, Labels], int] = {}
        for (stack_id, labels_id), value in batch.items():
            key = (held[stack_id], held[labels_id])
            merged[key] = merged.get(key, 0) + value
        return merged

    def flush(self) -> None:
        """Give the requests that ended their last interval now (before :meth:`take`)."""
        with self._lock:
            self._finish_ended()

    def _upload(self) -> None:
        with self._window_lock:
            batch, self._window = self._window, {}
            held, self._held = self._held, {}
            start, self._window_start = self._window_start, time.time_ns()
        if not batch:
            return
        builder = ProfileBuilder(("wall", "nanoseconds"), self.period_ns)
        for index, ((stack_id, labels_id), value) in enumerate(batch.items(), 1):
            builder.add(held[stack_id], held[labels_id], value)
            if not index % 64:
                # Let the event loop have the GIL now, not after the 5 ms switch interval
                # (building a window of thousands of entries takes tens of milliseconds).
                time.sleep(0)
        raw = builder.encode(time_nanos=start, duration_nanos=max(self._window_start - start, 1))
        try:
            self._pusher.push(push_request([(self.series, [raw])]), timeout=10.0)
            self.stats["uploads"] += 1
        except PushError as exc:
            self.stats["failures"] += 1
            if not self._failed_once:
                self._failed_once = True
                logger.warning(
                    "span-profiles: uploading the wall-clock profile to %s failed: %s (that "
                    "window is dropped; further failures are logged at DEBUG)",
                    self.settings.server_address,
                    exc,
                )
            else:
                logger.debug("span-profiles: wall-clock upload failed: %s", exc)


WALL = InProcessWall()
"""The process's in-process wall producer."""
