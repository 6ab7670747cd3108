"""Read the stacks of another CPython 3.14+ process: which threads are on a CPU, what they run.

One :meth:`StackReader.read` is one sample of every thread that is on a CPU. A thread that runs
an asyncio task comes back with the task's id (``id(task)`` in the app) and the task's frames;
any other thread with its native id and its frames. Identity and frames are read together:

* **Paused** (default): each thread that is on a CPU is stopped for the read (:mod:`.ptrace`),
  so an event-loop thread's running task and frames are one consistent snapshot, and no thread
  changes its labels (a worker thread its job) while it is read. A read costs each of those
  threads ~50-150 µs of stop per sample.
* **Unpaused** (when ptrace is not allowed): CPython reads the running task first and walks the
  frames afterwards while the loop keeps running, so a read can straddle a task switch (a
  *torn* read). Each task read is checked by a second one (the same task must still run) and by
  its shape (a walk that missed the task's own coroutine frame runs on into the event loop's
  frames); a torn read is retried once, then dropped and counted.

Only threads in state ``R`` in ``/proc/<pid>/task/<tid>/stat`` are sampled (``oncpu``), on both
3.14 (which reports no thread state) and 3.15 (whose own check reads the same file).

Standard library only: this module runs in the sampler process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from typing import Any

from span_profiles._samplers.builtin.ptrace import PauseError, Pauser

__all__ = ["ReadStats", "Sample", "StackReader", "frame_parts"]

Stack = tuple[Any, ...]
"""``FrameInfo`` records, leaf first (hashable: they are struct sequences)."""

_V315 = sys.version_info >= (3, 15)

# A task's frames never include the frames that drive the event loop: a walk that reached them
# missed the task's own coroutine frame (a torn read).
_LOOP_FRAMES = frozenset(
    {"Handle._run", "BaseEventLoop._run_once", "BaseEventLoop.run_forever", "<module>"}
)

TORN = -1
"""The ``task`` of a torn read returned with ``keep_torn`` (its stack may be either side's)."""

_THREAD_LIST_S = 1.0
"""How often the whole thread list is read again (~10-30 µs with 20 threads). A thread that
starts a labelled job meanwhile is added at once from its event (:meth:`StackReader.watch`): a
thread pool's new worker runs a request's job from its first tick on."""


# Plain classes rather than dataclasses: ``dataclasses`` imports ``inspect``, ~4 MiB of memory
# in a process that otherwise needs very little.


class Sample:
    """One thread's stack, and what it ran: a task (``task`` = its id) or itself (``task`` = 0).

    ``t0``/``t1``: ``time.monotonic_ns()`` around the read; identity changes inside that
    window void the sample.
    """

    __slots__ = ("stack", "t0", "t1", "task", "tid")

    def __init__(self, tid: int, task: int, stack: Stack, t0: int, t1: int) -> None:
        self.tid = tid
        self.task = task
        self.stack = stack
        self.t0 = t0
        self.t1 = t1


class ReadStats:
    """Counters over the reader's life.

    ``reads``: calls of :meth:`StackReader.read` that found a thread on a CPU; ``samples``:
    thread samples kept; ``task_reads``: those taken inside an asyncio task; ``torn``: task
    reads that straddled a task switch (unpaused only), retried or dropped; ``dropped_torn``:
    thread samples dropped because every attempt was torn; ``failed``: reads that raised
    (memory changed under the reader); ``paused``: reads made with the loop thread stopped;
    ``pause_error``: why pausing was given up (empty while it works or was not asked for).
    """

    def __init__(self) -> None:
        self.reads = 0
        self.samples = 0
        self.task_reads = 0
        self.torn = 0
        self.dropped_torn = 0
        self.failed = 0
        self.paused = 0
        self.pause_error = ""


def frame_parts(frame: Any) -> tuple[str, str, int]:
    """``(filename, function, line)`` of a ``FrameInfo`` of 3.14 or 3.15."""
    if _V315:
        location = frame.location
        return frame.filename, frame.funcname, location.lineno if location is not None else 0
    return frame.filename, frame.funcname, frame.lineno


class StackReader:
    """Samples the threads of process ``pid`` (same interpreter version, same build).

    Raises what ``RemoteUnwinder`` raises when the process cannot be read (``PermissionError``,
    ``OSError``, ``RuntimeError``): the caller reports it.
    """

    def __init__(
        self,
        pid: int,
        *,
        pause: bool = True,
        oncpu: bool = True,
        retries: int = 1,
        keep_torn: bool = False,
    ) -> None:
        remote = importlib.import_module("_remote_debugging")
        options: dict[str, Any] = {"cache_frames": True} if _V315 else {}
        self.pid = pid
        self.oncpu = oncpu
        self.retries = retries
        self.keep_torn = keep_torn
        """Return dropped torn reads too, as samples of task :data:`TORN` (benchmarks)."""
        self.stats = ReadStats()
        self._all = remote.RemoteUnwinder(pid, all_threads=True, **options)
        self._main = remote.RemoteUnwinder(pid, all_threads=False, **options)
        # 3.14 sees only the main thread's loop; 3.15 sees loops in every thread.
        self._tasks = self._all if _V315 else self._main
        if _V315:
            # 3.15.0: the first async read after construction reports the task running at
            # construction time with fresh frames.
            for unwinder in (self._all, self._main):
                with contextlib.suppress(Exception):
                    unwinder.get_async_stack_trace()
        self._pauser: Pauser | None = Pauser() if pause else None
        self.loop_threads: set[int] = {pid}
        """Threads that may run asyncio tasks: the main thread, and (3.15) any seen running one."""
        self._stat: dict[int, int] = {}
        self._listed = 0.0

    # -- which threads are on a CPU ------------------------------------------------------------

    def _list_threads(self) -> None:
        try:
            tids = {int(name) for name in os.listdir(f"/proc/{self.pid}/task")}
        except FileNotFoundError:
            raise ProcessLookupError(self.pid) from None
        for tid in list(self._stat):
            if tid not in tids:
                os.close(self._stat.pop(tid))
        for tid in tids - self._stat.keys():
            with contextlib.suppress(OSError):
                self._stat[tid] = os.open(f"/proc/{self.pid}/task/{tid}/stat", os.O_RDONLY)
        self.loop_threads &= tids | {self.pid}

    def watch(self, tid: int) -> None:
        """Sample thread ``tid`` from now on (it announced itself before the next thread list)."""
        if tid not in self._stat:
            with contextlib.suppress(OSError):
                self._stat[tid] = os.open(f"/proc/{self.pid}/task/{tid}/stat", os.O_RDONLY)

    def on_cpu(self) -> list[int]:
        """Native ids of the threads running or runnable now (state ``R``)."""
        now = time.monotonic()
        if now - self._listed >= _THREAD_LIST_S:
            self._listed = now
            self._list_threads()
        running: list[int] = []
        for tid, fd in list(self._stat.items()):
            try:
                state = os.pread(fd, 512, 0).rpartition(b")")[2][1:2]
            except OSError:
                os.close(self._stat.pop(tid))
                continue
            if state == b"R" or not self.oncpu:
                running.append(tid)
        return running

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> list[Sample]:
        """One sample of every thread on a CPU (none when no thread is)."""
        running = self.on_cpu()
        if not running:
            return []
        self.stats.reads += 1
        samples: list[Sample] = []
        todo = running
        for attempt in range(self.retries + 1):
            got, torn = self._read_once(todo, last=attempt == self.retries)
            samples += got
            if not torn:
                break
            todo = torn
        self.stats.samples += len(samples)
        return samples

    def _pause(self, tids: list[int]) -> tuple[list[int], list[int]]:
        pauser = self._pauser
        if pauser is None or not tids:
            return [], []
        try:
            return pauser.pause(tids)
        except PauseError as exc:
            self._pauser = None
            self.stats.pause_error = str(exc)
            return [], []

    def _read_once(self, running: list[int], last: bool) -> tuple[list[Sample], list[int]]:
        loops = [tid for tid in running if tid in self.loop_threads]
        pauser = self._pauser
        # Every thread read is stopped: a loop thread so that its running task and its frames
        # are one snapshot, any thread so that it cannot change jobs (labels) during the read.
        stopped, pending = self._pause(running)
        paused = stopped + pending
        # The window starts after the pause and ends before the resume: a paused thread wrote
        # its last event before it stopped and writes the next one after it runs again, so its
        # own changes fall outside (waiting for it to stop can take a scheduler slice on a busy
        # machine, and it runs on meanwhile).
        t0 = time.monotonic_ns()
        tasks: dict[int, tuple[int, Stack]] = {}
        threads: dict[int, Stack] = {}
        torn: list[int] = []
        torn_stacks: dict[int, Stack] = {}
        try:
            if loops:
                tasks = self._read_tasks()
                if not paused and tasks:
                    again = self._read_tasks()
                    for tid, (task, stack) in list(tasks.items()):
                        if again.get(tid, (0,))[0] != task or not _LOOP_FRAMES.isdisjoint(
                            frame.funcname for frame in stack
                        ):
                            torn_stacks[tid] = tasks.pop(tid)[1]
                            torn.append(tid)
            rest = [tid for tid in running if tid not in tasks and tid not in torn]
            if rest:
                threads = self._read_threads(rest)
                unchecked = [tid for tid in loops if tid in threads]
                if unchecked and not paused:
                    # A loop thread outside any task when its running task was read may have
                    # entered one before its stack was read: it must still be outside now.
                    started = self._read_tasks()
                    for tid in unchecked:
                        if tid in started:
                            torn_stacks[tid] = threads.pop(tid)
                            torn.append(tid)
            t1 = time.monotonic_ns()
        except ProcessLookupError:
            raise
        except (OSError, RuntimeError, UnicodeDecodeError, MemoryError, ValueError):
            self.stats.failed += 1
            return [], []
        finally:
            if pauser is not None:
                pauser.resume(stopped)
                pauser.release(pending)
        if paused:
            self.stats.paused += 1
        self.stats.torn += len(torn)
        if last:
            self.stats.dropped_torn += len(torn)
        samples = [Sample(tid, task, stack, t0, t1) for tid, (task, stack) in tasks.items()]
        self.stats.task_reads += len(samples)
        samples += [Sample(tid, 0, stack, t0, t1) for tid, stack in threads.items()]
        if last and self.keep_torn:
            samples += [Sample(tid, TORN, stack, t0, t1) for tid, stack in torn_stacks.items()]
        return samples, torn

    def _read_tasks(self) -> dict[int, tuple[int, Stack]]:
        found: dict[int, tuple[int, Stack]] = {}
        for awaited in self._tasks.get_async_stack_trace():
            running = awaited.awaited_by
            if not running:
                continue
            task = running[0]
            coroutines = task.coroutine_stack
            stack: Stack = tuple(coroutines[0].call_stack) if coroutines else ()
            found[awaited.thread_id] = (task.task_id, stack)
            self.loop_threads.add(awaited.thread_id)
        return found

    def _read_threads(self, tids: list[int]) -> dict[int, Stack]:
        wanted = set(tids)
        unwinder = self._main if wanted == {self.pid} else self._all
        result = unwinder.get_stack_trace()
        threads = [t for i in result for t in i.threads] if _V315 else result
        return {t.thread_id: tuple(t.frame_info) for t in threads if t.thread_id in wanted}


def main(argv: list[str]) -> int:
    """Debugging aid: ``<pid> <seconds> <rate> <pause 0|1> <out.json>``; writes every sample."""
    import json

    pid, seconds, rate, pause, out = int(argv[0]), float(argv[1]), int(argv[2]), argv[3], argv[4]
    reader = StackReader(pid, pause=pause == "1")
    rows: list[list[Any]] = []
    period = 1_000_000_000 // rate
    next_tick = time.monotonic_ns()
    end = next_tick + int(seconds * 1e9)
    cpu0 = time.process_time()
    while True:
        now = time.monotonic_ns()
        if now >= end:
            break
        if now < next_tick:
            time.sleep((next_tick - now) / 1e9)
            continue
        next_tick += period * max(1, (now - next_tick) // period + 1)
        for sample in reader.read():
            names = [frame_parts(frame)[1] for frame in sample.stack]
            rows.append([sample.tid, sample.task, names, sample.t0, sample.t1])
    stats = dict(vars(reader.stats), cpu_seconds=time.process_time() - cpu0, seconds=seconds)
    with open(out, "w") as file:
        json.dump({"samples": rows, "stats": stats}, file)
    return 0
