"""Wall-clock samples in the sampler process: every task's await chain, blocked worker threads.

The sampler already reads, on every tick, each thread on a CPU with its running task (the CPU
samples); each of those samples of a request stands for one tick of its wall time. Now and then it also reads where *every* task waits (``get_all_awaited_by()``: each task's
coroutine stack and the tasks awaiting it) and the stacks of the threads running a request's job
(``get_stack_trace()``), without stopping any thread: a suspended task or a blocked thread does
not change while it is read. Each task and thread is attributed through the same identity
events as the CPU samples (:class:`~.attribution.Attributor`: task id or thread -> labels before
the read), and :class:`~span_profiles._samplers.wall.account.Account` gives each request the
time since its last read, less its on-CPU samples meanwhile, spread over where it waits:

* its worker threads running its jobs, when it has any (what its tasks wait for), under the
  chain of its one waiting task if it has one;
* else its tasks that wait on no other task (a task awaiting a child, a ``gather`` or a
  ``TaskGroup`` is not where time goes), each under the chains of the tasks awaiting it.

Reading every task costs ~3 µs per task on 3.14 and ~8 µs on 3.15 (benchmarks/README.md), so the
read is not made on every tick: the time between reads is stretched until reading takes at most
:data:`BUDGET` of one CPU (by the smoothed cost of a read) (never more often than the CPU ticks). Weights are elapsed
times, so the totals stay right at any rate; only where within a request the time is placed gets
coarser. With 10,000 tasks a read takes tens of milliseconds: the CPU ticks in that time are
skipped (never back-filled), and the app never waits for it.

Standard library only: this module runs in the sampler process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from span_profiles._samplers.builtin import ring, stacks
from span_profiles._samplers.builtin.attribution import Attributor, Labels
from span_profiles._samplers.pprof import Frame, ProfileBuilder
from span_profiles._samplers.wall.account import Account

__all__ = ["AFTER_LAST_WAIT", "BUDGET", "NOT_READ", "WallReader"]

BUDGET = 0.04
"""Share of one CPU the task reads may take (they are made less often above it)."""

_AWAITERS = 8
_MOVES = 1 << 17
"""Moves kept between two reads at most (one per task per read; beyond: placed by halves)."""
_STALE_NS = 60_000_000_000
"""A request not seen for this long, with no end known (its end event was lost), is closed."""


class _Marker(NamedTuple):
    """A frame of our own, in the shape :func:`.stacks.frame_parts` reads (3.14 and 3.15)."""

    filename: str
    funcname: str
    lineno: int = 0
    location: None = None


NOT_READ: stacks.Stack = (_Marker("<span-profiles>", "[waiting: not read]"),)
"""Where a request's time goes when it ended before any read found it waiting: with many tasks
reads are seconds apart (a read of 10,000 tasks takes about half a second), so a short request
can start and end between two. Its time is known (from its events), where it waited is not."""

AFTER_LAST_WAIT: stacks.Stack = (_Marker("<span-profiles>", "[after its last wait]"),)
"""Where a request's time goes from its last move (a task of it ran again) to its end, when no
read saw it after that move: it was finishing, where exactly is not known."""


class WallReader:
    """The wall profile's part of the sampler process (see the module docstring)."""

    def __init__(
        self,
        reader: stacks.StackReader,
        attributor: Attributor,
        period_ns: int,
        window_of: Callable[[int], int],
        frames: Callable[[stacks.Stack], list[Frame]],
        extra: Labels = (),
        publish: Callable[[int], None] | None = None,
    ) -> None:
        self.reader = reader
        self.attributor = attributor
        self.period_ns = period_ns
        self.read_period_ns = period_ns
        self.next_read = 0
        self._window_of = window_of
        self._frames = frames
        self._extra = extra
        self.account = Account(self._emit)
        self.builders: dict[int, ProfileBuilder] = {}
        self._lid: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._cost = 0
        self._publish = publish
        self._moves: list[ring.Event] = []
        self._new: list[ring.Event] = []
        """Identity events that may open a request not known yet (see :meth:`seen`)."""
        self._first_move: dict[str, int] = {}
        """Request -> when it first ran (or a job of it started) since its last visit."""
        self.stats: dict[str, int] = dict.fromkeys(
            ("reads", "failed", "tasks", "longest_read_ns", "read_period_ns", "open"), 0
        )

    # -- on-CPU samples --------------------------------------------------------------------

    def on_cpu(self, samples: Sequence[stacks.Sample], now: int) -> None:
        """The CPU samples of one tick: each of a request stands for one tick of its time, as
        in the CPU profile (a late tick's longer gap goes to where the request waits: weighing
        the sample by the gap gave one request the whole of a stall that all of them waited
        out)."""
        weight = self.period_ns
        attributor = self.attributor
        for sample in samples:
            if sample.task == stacks.TORN:
                continue
            kind, ident = (ring.TASK, sample.task) if sample.task else (ring.THREAD, sample.tid)
            lid = attributor.lid_at(kind, ident, sample.t0)
            labels = attributor.resolve(lid, sample.t0) if lid else ()
            if not labels:
                continue
            key = self._begin(lid, labels, sample.t0)
            self.account.on_cpu(key, sample.stack, labels, weight, sample.t0)

    # -- task and thread reads ---------------------------------------------------------------

    def moved(self, event: ring.Event) -> None:
        """A task ran for the first time since the last read began (:data:`~.ring.RAN`), or a
        thread took a request's labels (a job starts): its request moved on at ``event.t``."""
        if len(self._moves) < _MOVES:
            self._moves.append(event)

    def seen(self, event: ring.Event) -> None:
        """A task or thread took labels (``event.aux``): a request not known yet starts, even
        if no read ever finds it waiting (it ends between two reads)."""
        if len(self._new) < _MOVES:
            self._new.append(event)

    def _open_new(self, before: int) -> None:
        later: list[ring.Event] = []
        attributor = self.attributor
        for event in self._new:
            if event.t >= before:
                later.append(event)
                continue
            lid = event.aux
            labels = attributor.resolve(lid, event.t)
            if labels and labels[0][1] not in self.account:
                self._begin(lid, labels, event.t)
        self._new = later

    def _take_moves(self, before: int) -> None:
        later: list[ring.Event] = []
        first = self._first_move
        attributor = self.attributor
        for event in self._moves:
            if event.t >= before:
                later.append(event)  # the next read's
                continue
            if event.kind == ring.RAN:
                lid = attributor.lid_at(ring.TASK, event.ident, event.t)
            else:
                lid = event.aux
            labels = attributor.resolve(lid, event.t) if lid else ()
            if not labels:
                continue
            key = labels[0][1]
            if key not in self._lid:
                continue  # closed already, or never seen waiting
            known = first.get(key)
            if known is None or event.t < known:
                first[key] = event.t
        self._moves = later

    def due(self, now: int) -> bool:
        """Whether a read of every task is due."""
        return now >= self.next_read

    def read(self, now: int) -> None:
        """Where every request's tasks and job threads wait now; give each its time."""
        began = time.monotonic_ns()
        if self._publish is not None:
            self._publish(began)  # the app's steps from now on are the next read's moves
        self._open_new(began)
        self._take_moves(began)
        try:
            awaited = self.reader._all.get_all_awaited_by()
        except ProcessLookupError:
            raise
        except (OSError, RuntimeError, UnicodeDecodeError, MemoryError, ValueError):
            self.stats["failed"] += 1
            self.next_read = now + self.read_period_ns
            return
        at = time.monotonic_ns()
        waits, labels_of = self._tasks(awaited, began)
        threads = self._job_threads(began)
        if threads:
            try:
                read = self.reader._read_threads(list(threads))
            except (OSError, RuntimeError, UnicodeDecodeError, MemoryError, ValueError):
                read = {}
            jobs: dict[str, list[Any]] = {}
            for tid, stack in read.items():
                key, labels = threads[tid]
                # Under the request's one waiting task, if it has one: it waits for this job.
                leaves = waits.get(key, ())
                jobs.setdefault(key, []).append(stack + leaves[0] if len(leaves) == 1 else stack)
                labels_of[key] = labels
            waits.update(jobs)  # a request's job threads are what its tasks wait for
        for key, stacks_now in waits.items():
            # At the read's start, which the labels were resolved at: a request that ended
            # while a long read ran (tenths of a second at 10,000 tasks) is given no time past
            # its end (its end, found later, gives it the rest up to there).
            self.account.visit(key, labels_of[key], began, stacks_now, self._first_move.pop(key, 0))
            self._seen[key] = at
        self._close_ended(at, waits)
        took = time.monotonic_ns() - began
        stats = self.stats
        stats["reads"] += 1
        stats["longest_read_ns"] = max(stats["longest_read_ns"], took)
        # Smoothed: one read slowed down by a busy machine does not stretch the next interval.
        cost = self._cost = int(0.8 * self._cost + 0.2 * took) if self._cost else took
        self.read_period_ns = max(self.period_ns, int(cost / BUDGET))
        stats["read_period_ns"] = self.read_period_ns
        stats["open"] = len(self.account)
        self.next_read = now + self.read_period_ns

    def _tasks(self, awaited: Any, at: int) -> tuple[dict[str, list[Any]], dict[str, Labels]]:
        entries: dict[int, tuple[tuple[Any, ...], Any]] = {}
        for info in awaited:
            for task in info.awaited_by:
                coroutines = task.coroutine_stack
                stack = tuple(coroutines[0].call_stack) if coroutines else ()
                entries[task.task_id] = (stack, task.awaited_by)
        self.stats["tasks"] = len(entries)
        awaiting = {awaiter.task_name for _, above in entries.values() for awaiter in above}
        attributor = self.attributor
        waits: dict[str, list[Any]] = {}
        labels_of: dict[str, Labels] = {}
        for task_id, (stack, above) in entries.items():
            if task_id in awaiting:
                continue  # it waits for another task: that one is where the time goes
            lid = attributor.lid_at(ring.TASK, task_id, at)
            if not lid:
                continue
            labels = attributor.resolve(lid, at)
            if not labels:
                continue
            full = stack
            for _ in range(_AWAITERS):
                if not above:
                    break
                awaiter = above[0]
                full += tuple(awaiter.call_stack)
                parent = entries.get(awaiter.task_name)
                above = parent[1] if parent is not None else ()
            key = self._begin(lid, labels, at)
            waits.setdefault(key, []).append(full)
            labels_of[key] = labels
        return waits, labels_of

    def _job_threads(self, at: int) -> dict[int, tuple[str, Labels]]:
        """Threads other than event loops running a request's job now."""
        attributor = self.attributor
        loops = self.reader.loop_threads
        found: dict[int, tuple[str, Labels]] = {}
        for tid in attributor.threads():
            if tid in loops:
                continue
            lid = attributor.lid_at(ring.THREAD, tid, at)
            if not lid:
                continue
            labels = attributor.resolve(lid, at)
            if labels:
                found[tid] = (self._begin(lid, labels, at), labels)
        return found

    def _begin(self, lid: int, labels: Labels, at: int) -> str:
        key = labels[0][1]  # span_id: a rename keeps it
        if key not in self.account:
            self.account.begin(key, labels, self.attributor.first_seen.get(lid, at))
            self._lid[key] = lid
            self._seen[key] = at
        return key

    def _close_ended(self, at: int, seen: dict[str, list[Any]]) -> None:
        for key in list(self._lid):
            if key in seen:
                continue
            lid = self._lid.get(key, 0)
            ended = self.attributor.ended_at(lid) if lid else None
            if ended is None and at - self._seen.get(key, at) < _STALE_NS:
                continue
            self._end(key, ended if ended is not None else self._seen.get(key, at))

    def _end(self, key: str, at: int) -> None:
        # Its last interval: up to its first move since its last read to where that read saw
        # it, the rest (it was finishing) to AFTER_LAST_WAIT; all to the former if it did not
        # move.
        if not self.account.seen_waiting(key):
            # Never found waiting: its time less its CPU samples, known but not where.
            labels = self.attributor.resolve(self._lid.get(key, 0), at - 1)
            if labels:
                self.account.visit(key, labels, at, (NOT_READ,))
        self.account.end(key, at, self._first_move.pop(key, 0), AFTER_LAST_WAIT)
        self._lid.pop(key, None)
        self._seen.pop(key, None)

    def finish(self, at: int) -> None:
        """The sampler stops: every open request's time up to its end where it is known (reads
        are seconds apart at 10,000 tasks: many ended since the last one), else up to ``at``."""
        self._open_new(at)
        self._take_moves(at)
        for key, lid in list(self._lid.items()):
            ended = self.attributor.ended_at(lid)
            self._end(key, ended if ended is not None and ended < at else at)
        self.account.end_all(at)

    # -- output ------------------------------------------------------------------------------

    def _emit(self, stack: Any, labels: Labels, value: int, at: int) -> None:
        # The window of now, not of ``at``: an end found late still reaches an open window.
        window = self._window_of(time.monotonic_ns())
        builder = self.builders.get(window)
        if builder is None:
            builder = self.builders[window] = ProfileBuilder(
                ("wall", "nanoseconds"), self.period_ns
            )
        builder.add(self._frames(stack), labels + self._extra if self._extra else labels, value)

    def take(self, window: int) -> list[ProfileBuilder]:
        """The profiles of ``window`` and of any earlier one not taken yet, with samples."""
        taken: list[ProfileBuilder] = []
        for index in sorted(self.builders):
            if index > window:
                break
            builder = self.builders.pop(index)
            if len(builder):
                taken.append(builder)
        return taken
