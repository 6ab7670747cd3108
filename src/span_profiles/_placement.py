"""CPU placement (Linux): the profiler's sampler sits next to one event loop; nothing else is confined.

Why
    py-spy reads a thread's stack first and its labels ~15-250 µs later. When the sampler runs on
    another CPU while the event loop keeps running, a label switched at a task step lands on
    samples of the next step: measured 93-94 % exact attribution at 2 ms steps and ~10 % at
    100 µs steps. With the agent's threads and the event-loop thread on one CPU the loop cannot
    run while the sampler reads it: 99.9-100 % exact.

What is confined
    Only the agent's threads (they are born pinned: the thread calling ``configure()`` is pinned
    around the call, and Linux threads inherit their creator's affinity) and *one* event-loop
    thread (the thread that starts the profiler inside a running loop, or calls
    :func:`pin_current_thread`). Every Python thread started while a pin is active gets the
    process's affinity mask back as its first action (a wrapper around
    ``threading.Thread._bootstrap_inner``, installed only while a pin is active and removed
    exactly), so worker threads started *by* the pinned loop (anyio and ``asyncio.to_thread``,
    ``run_in_executor``, asgiref's ``sync_to_async``, plain threads) keep every CPU. Native threads
    started by C code on the loop thread (libuv's pool under uvloop) are not Python threads and
    do inherit the pin.

Where
    Inside the process's own mask (``os.sched_getaffinity``, which reflects a cgroup cpuset),
    chosen when the agent starts: the gunicorn worker number when given (workers of one server
    spread), else the CPU the starting thread runs on, which the kernel chose (with a lazy start
    that thread is the loop thread). A loop thread announced later joins that CPU: the agent's
    threads keep starting threads of their own, which inherit their CPU. The pid is never used:
    in containers every pod has the same pid.

Adapting
    About once a second a daemon thread reads the loop thread's ``schedstat`` (run and run-queue
    wait time: one small file read). When the loop waited for its CPU for at least
    :attr:`Policy.wait_fraction` of :attr:`Policy.patience` intervals in a row, the monitor reads
    ``/proc/stat`` and moves the loop and the agent's threads together to the least busy allowed
    CPU, if that one is clearly less busy. A hog on the loop's CPU thus holds it there ~2-3 s.

More than one loop
    The sampler is one thread and can sit next to one loop only. The first loop thread to ask
    gets the pin; later ones stay unpinned (logged once at INFO); when the pinned loop thread
    exits, the next one to ask gets it.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from span_profiles._core import guard
from span_profiles._settings import Toggle

__all__ = ["Placement", "Policy", "current_placement", "pin_current_thread"]

logger = logging.getLogger("span_profiles")

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the loop thread's run-queue wait."""

_PROBE_BYTES = 12 << 20
"""What a probe hashes: ~15 ms of CPU, spent only while the loop waits for its CPU."""


class System(Protocol):
    """The kernel interface placement uses; tests pass a fake one."""

    def get_affinity(self, tid: int) -> frozenset[int]:
        """The CPUs thread ``tid`` may run on (``0``: the calling thread); empty when it is gone."""

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> bool:
        """Confine thread ``tid`` to ``cpus``; ``False`` when the thread is gone or it is refused."""

    def tasks(self) -> frozenset[int]:
        """Native ids of the process's threads."""

    def schedstat(self, tid: int) -> tuple[int, int] | None:
        """``(run ns, run-queue wait ns)`` of thread ``tid`` so far, ``None`` when it is gone."""

    def last_cpu(self, tid: int) -> int | None:
        """The CPU thread ``tid`` last ran on."""

    def cpu_times(self) -> Mapping[int, tuple[int, int]]:
        """Per CPU: ``(busy, total)`` time so far, in any unit (``/proc/stat``)."""

    def python_threads(self) -> frozenset[int]:
        """Native ids of the threads Python's ``threading`` knows."""

    def probe(self, cpu: int) -> float | None:
        """Run-queue wait per run time of a short burst of work on ``cpu`` (calling thread)."""

    def now(self) -> float:
        """A monotonic clock in seconds."""

    def raise_priority(self, tid: int) -> str | None:
        """Let thread ``tid`` run before other threads of its CPU; what was set, ``None`` if refused."""

    def reset_priority(self, tid: int) -> None:
        """Give thread ``tid`` the default scheduling back."""


class LinuxSystem:
    """:class:`System` on ``/proc`` and ``os.sched_*affinity``."""

    def get_affinity(self, tid: int) -> frozenset[int]:
        """See :meth:`System.get_affinity`; empty for a thread that is gone."""
        try:
            return frozenset(os.sched_getaffinity(tid))
        except OSError:
            # A thread listed in /proc a moment ago may have exited since.
            return frozenset()

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> bool:
        """See :meth:`System.set_affinity`."""
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            # The thread exited, or a cgroup forbids the CPU: placement is an optimisation only.
            return False
        return True

    def tasks(self) -> frozenset[int]:
        """See :meth:`System.tasks`."""
        try:
            return frozenset(int(name) for name in os.listdir("/proc/self/task"))
        except OSError:
            return frozenset()

    def schedstat(self, tid: int) -> tuple[int, int] | None:
        """See :meth:`System.schedstat`."""
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as file:
                run, wait = file.read().split()[:2]
        except (OSError, ValueError):
            return None
        return int(run), int(wait)

    def last_cpu(self, tid: int) -> int | None:
        """See :meth:`System.last_cpu`."""
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as file:
                # Field 39 ("processor"); the command name before it may contain spaces.
                return int(file.read().rpartition(b")")[2].split()[36])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_times(self) -> Mapping[int, tuple[int, int]]:
        """See :meth:`System.cpu_times`."""
        times: dict[int, tuple[int, int]] = {}
        try:
            with open("/proc/stat", "rb") as file:
                lines = file.read().splitlines()
        except OSError:
            return times
        for line in lines:
            if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                continue
            name, *values = line.split()
            numbers = [int(v) for v in values[:8]]
            # user nice system idle iowait irq softirq steal: idle and iowait are not busy.
            idle = numbers[3] + numbers[4]
            total = sum(numbers)
            times[int(name[3:])] = (total - idle, total)
        return times

    def python_threads(self) -> frozenset[int]:
        """See :meth:`System.python_threads`."""
        return frozenset(t.native_id for t in threading.enumerate() if t.native_id is not None)

    def probe(self, cpu: int) -> float | None:
        """See :meth:`System.probe`: ~15 ms of hashing that releases the GIL, on ``cpu``."""
        import hashlib

        before_mask = os.sched_getaffinity(0)
        tid = threading.get_native_id()
        data = bytes(_PROBE_BYTES)
        try:
            os.sched_setaffinity(0, {cpu})
            start = self.schedstat(tid)
            # hashlib releases the GIL on large inputs: the loop keeps running meanwhile.
            hashlib.sha256(data).digest()
            end = self.schedstat(tid)
        except OSError:
            return None
        finally:
            self.set_affinity(0, frozenset(before_mask))
        if start is None or end is None or end[0] <= start[0]:
            return None
        return (end[1] - start[1]) / (end[0] - start[0])

    def now(self) -> float:
        """See :meth:`System.now`."""
        import time

        return time.monotonic()

    def raise_priority(self, tid: int) -> str | None:
        """See :meth:`System.raise_priority`: ``SCHED_FIFO`` 1, else nice -10 (``CAP_SYS_NICE``,
        or ``RLIMIT_RTPRIO``/``RLIMIT_NICE``, allows them). Threads they start get the default."""
        fifo = getattr(os, "SCHED_FIFO", None)
        if fifo is not None:
            try:
                os.sched_setscheduler(
                    tid, fifo | getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_param(1)
                )
                return "SCHED_FIFO 1"
            except OSError:
                pass
        try:
            os.setpriority(os.PRIO_PROCESS, tid, -10)
        except OSError:
            return None
        return "nice -10"

    def reset_priority(self, tid: int) -> None:
        """See :meth:`System.reset_priority`."""
        try:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, 0)
        except OSError:
            pass  # gone, or raised by someone else: nothing of ours to undo


def native_threads() -> frozenset[int]:
    """Native ids of the process's threads that Python's ``threading`` does not know."""
    return _system.tasks() - _system.python_threads()


def supported() -> bool:
    """Whether this platform lets a process place its threads (Linux)."""
    return hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


@dataclass
class Policy:
    """Where the loop goes and when it moves: pure decisions on readings, testable alone.

    Contention is measured as run-queue wait per unit of run time: ``0`` means the thread ran
    whenever it wanted, ``1`` that it waited as long as it ran (one other busy thread on the CPU).
    The loop's own ratio measures its CPU; a short probe on a candidate CPU measures that one.
    """

    wait_fraction: float = 0.10
    """The loop is contended in an interval when it waited for its CPU this share of it."""
    patience: int = 2
    """Contended intervals in a row before candidates are probed."""
    margin: float = 0.3
    """A move needs a candidate with this share less contention than the loop's CPU."""
    candidates: int = 2
    """How many of the least busy CPUs (by ``/proc/stat``) are probed."""
    rng: random.Random = field(default_factory=random.Random)
    """Breaks the tie between workers contending for one CPU: they must not all move together."""
    contended: int = 0
    """Contended intervals in a row so far."""
    _last: tuple[float, int, int] | None = None
    _cpu_times: Mapping[int, tuple[int, int]] | None = None
    _hesitated: bool = False
    _backoff: int = 1
    """After probes found no better CPU, the next probe waits this many times ``patience``."""

    def first_cpu(
        self, allowed: Sequence[int], loop_cpu: int | None, index: int | None
    ) -> tuple[int, str]:
        """The CPU to start on, and why.

        Args:
            allowed: the process's CPUs, sorted.
            loop_cpu: the CPU the loop thread runs on now, if known.
            index: the gunicorn worker number, which spreads one server's workers.
        """
        if index is not None:
            return allowed[index % len(allowed)], f"worker number {index}"
        if loop_cpu is not None and loop_cpu in allowed:
            return loop_cpu, "the CPU the loop thread ran on"
        return allowed[0], "the first allowed CPU"

    def restart(self) -> None:
        """Forget the readings: the loop moved or another loop took over."""
        self.contended = 0
        self._last = None
        self._cpu_times = None
        self._hesitated = False

    def observe(
        self,
        now: float,
        sched: tuple[int, int],
        current: int,
        allowed: Sequence[int],
        cpu_times: Callable[[], Mapping[int, tuple[int, int]]],
        probe: Callable[[int], float | None],
    ) -> tuple[int, str] | None:
        """One look at the loop thread; returns ``(new CPU, why)`` when it should move.

        Args:
            now: monotonic seconds.
            sched: the loop thread's ``(run ns, wait ns)`` so far.
            current: the CPU it is pinned to.
            allowed: the process's CPUs.
            cpu_times: reads per-CPU ``(busy, total)``; called only while the loop is contended.
            probe: measures wait per run time on a CPU; called only while contended, for the
                loop's CPU and the candidates, then less and less often while no CPU is better.
        """
        last, self._last = self._last, (now, sched[0], sched[1])
        if last is None or now <= last[0]:
            return None
        waited_ns, ran_ns = sched[1] - last[2], sched[0] - last[1]
        waited = waited_ns / ((now - last[0]) * 1e9)
        if waited < self.wait_fraction:
            self.contended, self._cpu_times, self._hesitated, self._backoff = 0, None, False, 1
            return None
        self.contended += 1
        before, self._cpu_times = self._cpu_times, cpu_times()
        if self.contended < self.patience:
            return None
        here = waited_ns / max(ran_ns, 1)
        # The loop competes on its own CPU; on a candidate it would not find itself. A probe on
        # its CPU counts it as a competitor, weighted by the share of time it was runnable.
        runnable = min(1.0, (waited_ns + ran_ns) / ((now - last[0]) * 1e9))
        own = probe(current)
        busy = _busy_shares(before, self._cpu_times) if before is not None else {}
        others = sorted((c for c in allowed if c != current), key=lambda c: (busy.get(c, 0.0), c))
        best: tuple[float, int] | None = None
        for cpu in others[: self.candidates]:
            there = probe(cpu)
            if there is not None and (best is None or there < best[0]):
                best = (there, cpu)
        logger.debug(
            "span-profiles: loop on CPU %d waited %.2f s per s run; probes (wait per run): "
            "own CPU %s, best other %s",
            current,
            here,
            own,
            best,
        )
        if own is None or best is None or best[0] > (own - runnable) * (1 - self.margin):
            self._backoff = min(self._backoff * 2, 32)
            self.contended = -self._backoff * self.patience
            return None
        if not self._hesitated and self.rng.random() < 0.5:
            # Workers of one server contending for one CPU see the same readings; if they all
            # moved now, they would meet again on the target. Each waits once at random.
            self._hesitated = True
            return None
        why = (
            f"the loop waited for CPU {current} {waited:.0%} of the last second; "
            f"probes waited {own:.2f} s per s run there, {best[0]:.2f} on CPU {best[1]}"
        )
        self._backoff = 1
        self.restart()
        return best[1], why


def _busy_shares(
    before: Mapping[int, tuple[int, int]], after: Mapping[int, tuple[int, int]]
) -> dict[int, float]:
    shares: dict[int, float] = {}
    for cpu, (busy, total) in after.items():
        if cpu not in before:
            continue
        elapsed = total - before[cpu][1]
        if elapsed > 0:
            shares[cpu] = min(1.0, max(0.0, (busy - before[cpu][0]) / elapsed))
    return shares


@dataclass(frozen=True)
class Placement:
    """Where span-profiles put threads right now (see :func:`current_placement`)."""

    cpu: int | None
    """The CPU the sampler and the loop thread share; ``None`` when nothing is pinned."""
    loop_thread: int | None
    """Native id of the pinned event-loop thread."""
    agent_threads: tuple[int, ...]
    """Native ids of the agent's threads pinned to :attr:`cpu`."""
    allowed: tuple[int, ...]
    """The process's CPUs; every other thread may run on all of them."""
    reason: str
    """Why :attr:`cpu` was chosen, or why nothing is pinned."""
    moves: int
    """How often the loop moved to a less busy CPU."""
    sampler_priority: str | None = None
    """The scheduling the agent's two sampling threads got next to the loop (``"SCHED_FIFO 1"``,
    ``"nice -10"``), or ``None``: not found yet, not pinned, or refused (no ``CAP_SYS_NICE``)."""


@dataclass
class _State:
    mode: Toggle = "off"
    active: bool = False
    """The agent runs in this process and placement may pin."""
    allowed: tuple[int, ...] = ()
    process_mask: frozenset[int] = frozenset()
    cpu: int | None = None
    index: int | None = None
    agent_tids: set[int] = field(default_factory=set)
    loop_tid: int | None = None
    loop_mask: frozenset[int] | None = None
    reason: str = "the profiler is not running"
    moves: int = 0
    pending: dict[int, None] = field(default_factory=dict)
    """Threads that asked to be pinned before the agent started."""
    policy: Policy = field(default_factory=Policy)
    monitor: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    extra_loops_logged: bool = False
    pinned_to: set[int] = field(default_factory=set)
    """Every CPU the agent's threads were pinned to: a thread still there is a straggler."""
    sampling_tids: tuple[int, ...] = ()
    """The agent's sampler and labelling threads, once found (:func:`sampling_threads_found`)."""
    priority: str | None = None
    """What :meth:`System.raise_priority` set on them while the loop is pinned next to them."""
    priority_refused_logged: bool = False


_system: System = LinuxSystem()
_lock = threading.RLock()
_state = _State()
_restore: tuple[frozenset[int], frozenset[int]] | None = None
"""While a pin is active: the mask a new thread started on the pinned CPU gets back, and that
pinned CPU set. One tuple, rebound whole: a thread starting while the loop moves reads one
consistent pair, with or without the GIL."""
_wrapper: Callable[..., None] | None = None
_wrapped: Any = None
_forking_loop = False
_fork_hooks = False


# -- new threads get the full mask -------------------------------------------------------------


def _make_wrapper(original: Callable[[threading.Thread], None]) -> Callable[..., None]:
    @functools.wraps(original)
    def _bootstrap_inner(self: threading.Thread) -> None:
        restore = _restore
        if restore is not None:
            mask, pinned = restore
            try:
                # Only a thread born with the pin: one that a user confined stays confined.
                if _system.get_affinity(0) == pinned:
                    _system.set_affinity(0, mask)
            except Exception as exc:
                guard.fail("restoring the CPU mask of a new thread", exc, _unwrap_threads)
        original(self)

    return _bootstrap_inner


def _wrapper_in_place() -> bool:
    current: Any = threading.Thread.__dict__.get("_bootstrap_inner")
    for _ in range(32):  # a chain of functools.wraps wrappers; bounded against cycles
        if current is None:
            return False
        if current is _wrapper:
            return True
        current = getattr(current, "__wrapped__", None)
    return False


def _wrap_threads() -> None:
    """Install the thread-start wrapper unless it is still in the chain (another hook may sit on it)."""
    global _wrapper, _wrapped
    if _wrapper is not None and _wrapper_in_place():
        return
    original = threading.Thread.__dict__["_bootstrap_inner"]
    _wrapped = original
    _wrapper = _make_wrapper(original)
    threading.Thread._bootstrap_inner = _wrapper  # type: ignore[attr-defined]


def _unwrap_threads() -> None:
    """Remove the wrapper if it is on top; under another hook's wrapper it stays, inert."""
    global _wrapper, _wrapped, _restore
    _restore = None
    if _wrapper is not None and threading.Thread.__dict__.get("_bootstrap_inner") is _wrapper:
        threading.Thread._bootstrap_inner = _wrapped  # type: ignore[attr-defined]
        _wrapper = _wrapped = None


# -- pinning ------------------------------------------------------------------------------------


def agent_cpu(mode: Toggle, index: int | None) -> int | None:
    """The CPU the agent's threads are born on, or ``None`` when they stay unpinned.

    Called by the profiler before ``configure()``; also resets placement for a new agent.
    """
    with _lock:
        state = _state
        state.mode, state.index, state.cpu = mode, index, None
        state.policy.restart()
        if mode == "off":
            state.reason = "pin_cpu='off'"
            return None
        if not supported():
            state.reason = "CPU placement needs Linux (os.sched_setaffinity)"
            if mode == "on":
                logger.warning("span-profiles: pin_cpu='on' needs Linux; nothing is pinned")
            return None
        mask = _system.get_affinity(0)
        state.process_mask = mask
        state.allowed = tuple(sorted(mask))
        if len(state.allowed) < 2:
            state.reason = "the process may use one CPU only: the sampler shares it already"
            return None
        cpu, why = state.policy.first_cpu(
            state.allowed, _system.last_cpu(threading.get_native_id()), index
        )
        state.cpu, state.reason = cpu, why
        state.pinned_to = {cpu}
        return cpu


@contextmanager
def born_on(cpu: int | None) -> Iterator[frozenset[int] | None]:
    """Pin the calling thread to ``cpu`` for the block, so threads it starts are born there.

    Yields the caller's mask before (``None`` when not pinned). The caller stays pinned after
    the block; :func:`activate` decides whether it keeps the pin.
    """
    if cpu is None or not _system.set_affinity(0, frozenset({cpu})):
        yield None
        return
    before = _state.process_mask
    try:
        yield before
    except BaseException:
        _system.set_affinity(0, before)
        raise


def activate(agent_tids: frozenset[int], caller_is_loop: bool) -> None:
    """The agent runs: remember its threads, pin the loop thread if one is known."""
    with _lock:
        state = _state
        state.active = True
        if state.cpu is None:
            state.pending.clear()
            return
        state.agent_tids = set(agent_tids)
        caller = threading.get_native_id()
        pending = [tid for tid in state.pending if tid in _system.tasks()]
        state.pending.clear()
        if caller_is_loop:
            _pin_loop(state, caller, state.process_mask, "started inside the event loop")
        else:
            _system.set_affinity(0, state.process_mask)
        for tid in pending:
            if state.loop_tid is None:
                _pin_loop(state, tid, _system.get_affinity(tid), "asked before the start")
        if state.loop_tid is None:
            logger.debug(
                "span-profiles: the profiler's threads %s start on CPU %d (%s); no loop yet",
                sorted(state.agent_tids),
                state.cpu,
                state.reason,
            )


def pin_current_thread() -> bool:
    """Declare the calling thread an event-loop thread: pin it next to the profiler's threads.

    Call it on the thread that runs the event loop, once the loop runs (an ASGI lifespan startup
    handler, the first line of ``main()``). With ``pin_cpu`` ``"auto"`` or ``"on"`` on Linux, the
    thread and the agent's sampler threads then share one CPU, which keeps per-task-step labels
    exact; threads it starts keep every CPU. Only one loop thread per process is pinned: a second
    one gets ``False`` (the sampler can sit next to one loop only). Before the profiler starts the
    request is remembered and applied at start. Returns whether the thread is pinned now; never
    raises.
    """
    try:
        tid = threading.get_native_id()
        with _lock:
            state = _state
            if not state.active:
                state.pending[tid] = None
                return False
            if state.cpu is None:
                return False
            if state.loop_tid == tid:
                return True
            if state.loop_tid is not None and _system.schedstat(state.loop_tid) is not None:
                if not state.extra_loops_logged:
                    state.extra_loops_logged = True
                    logger.info(
                        "span-profiles: event-loop thread %d is not pinned: the sampler sits "
                        "next to loop thread %d; labels of this loop's task steps are less exact "
                        "(~94 %% at 2 ms steps)",
                        tid,
                        state.loop_tid,
                    )
                return False
            return _pin_loop(state, tid, _system.get_affinity(0), "pin_current_thread()")
    except Exception as exc:
        guard.fail("CPU placement", exc, release)
        return False


def _pin_loop(state: _State, tid: int, mask: frozenset[int], why: str) -> bool:
    global _restore
    assert state.cpu is not None
    # The loop joins the agent's CPU rather than the other way round: the agent's threads keep
    # starting threads of their own for a while, and those inherit the CPU they were born on.
    target = frozenset({state.cpu})
    if not _system.set_affinity(tid, target):
        return False
    state.loop_tid, state.loop_mask = tid, mask
    _move_agent(state, target)
    _prioritise(state)
    state.policy.restart()
    _restore = (state.process_mask, target)
    _wrap_threads()
    _start_monitor(state)
    logger.info(
        "span-profiles: pinned event-loop thread %d and the profiler's threads %s to CPU %d "
        "(%s; %s); other threads keep CPUs %s",
        tid,
        sorted(state.agent_tids),
        state.cpu,
        state.reason,
        why,
        _ranges(state.allowed),
    )
    return True


def _move_agent(state: _State, target: frozenset[int]) -> None:
    # Agent threads start threads of their own (the sampler a moment after configure(), upload
    # workers later), born with their creator's pin: native (non-Python) threads pinned to a CPU
    # we pinned to before are the agent's too.
    tasks = _system.tasks()
    stale = {frozenset({cpu}) for cpu in state.pinned_to} - {target}
    for tid in tasks - _system.python_threads() - {state.loop_tid or -1}:
        if tid in state.agent_tids:
            if _system.get_affinity(tid) != target:
                _system.set_affinity(tid, target)
        elif state.agent_tids and _system.get_affinity(tid) in stale:
            state.agent_tids.add(tid)
            _system.set_affinity(tid, target)
    state.agent_tids &= set(tasks)
    state.pinned_to.update(target)


def sampling_threads_found(tids: tuple[int, ...]) -> None:
    """The agent's sampler and labelling threads are known (``_core.sampler_gate`` found them).

    Next to a pinned loop they get the first claim on their CPU. A thread waking up on that CPU
    (another process's, an interrupt's worker) may preempt the sampler in the middle of a stack
    read, and the scheduler then often runs the loop for a whole slice before the sampler goes on:
    the stack and the labels it reads afterwards belong to different task steps. Measured beside
    a busy neighbourhood (``benchmarks/fidelity.py --busy --priority``): 91-98 % exact as before,
    99.2-99.8 % at nice -10, 100 % with ``SCHED_FIFO``; the two threads use ~1-3 % of a CPU.
    """
    try:
        with _lock:
            _state.sampling_tids = tuple(tids)
            _prioritise(_state)
    except Exception as exc:
        guard.fail("raising the sampler's priority", exc)


def _prioritise(state: _State) -> None:
    if state.priority is not None or not state.sampling_tids or state.loop_tid is None:
        return
    done = [_system.raise_priority(tid) for tid in state.sampling_tids]
    if all(done):
        state.priority = done[0]
        logger.info(
            "span-profiles: the profiler's sampling threads %s run at %s on CPU %s",
            list(state.sampling_tids),
            state.priority,
            state.cpu,
        )
        return
    for tid, raised in zip(state.sampling_tids, done, strict=True):
        if raised:
            _system.reset_priority(tid)
    if not state.priority_refused_logged:
        state.priority_refused_logged = True
        logger.info(
            "span-profiles: could not raise the priority of the profiler's sampling threads "
            "(needs CAP_SYS_NICE); on a busy machine some samples may carry the next step's "
            "labels"
        )


def sampler_priority_allowed() -> str | None:
    """What the sampling threads would get next to a pinned loop, tried on a throwaway thread
    (``span-profiles doctor``); ``None`` when this process may not raise a thread's priority."""
    result: list[str | None] = [None]

    def attempt() -> None:
        tid = threading.get_native_id()
        result[0] = _system.raise_priority(tid)
        if result[0] is not None:
            _system.reset_priority(tid)

    probe = threading.Thread(target=attempt, name="span-profiles-priority-probe", daemon=True)
    probe.start()
    probe.join()
    return result[0]


def _unprioritise(state: _State) -> None:
    if state.priority is not None:
        state.priority = None
        for tid in state.sampling_tids:
            _system.reset_priority(tid)


def _ranges(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


# -- adapting -----------------------------------------------------------------------------------


def _start_monitor(state: _State) -> None:
    if state.monitor is not None and state.monitor.is_alive():
        return
    state.stop = threading.Event()
    state.monitor = threading.Thread(
        target=_monitor, args=(state.stop,), name="span-profiles-placement", daemon=True
    )
    state.monitor.start()


def _monitor(stop: threading.Event) -> None:
    # Started from the pinned loop thread, possibly before the wrapper: take the full mask.
    _system.set_affinity(0, _state.process_mask)
    while not stop.wait(CHECK_INTERVAL):
        try:
            if not tick():
                return
        except Exception as exc:
            guard.fail("CPU placement", exc, release)
            return


def tick() -> bool:
    """One look at the loop thread (the monitor calls it each second); ``False`` ends the monitor."""
    global _restore
    with _lock:
        state = _state
        if not state.active or state.loop_tid is None or state.cpu is None:
            return False
        if not _wrapper_in_place():
            _wrap_threads()  # another hook's undo dropped it
        # A thread an agent thread started while it was being moved kept the old CPU.
        _move_agent(state, frozenset({state.cpu}))
        sched = _system.schedstat(state.loop_tid)
        if sched is None:
            logger.info(
                "span-profiles: event-loop thread %d exited; the profiler's threads are unpinned",
                state.loop_tid,
            )
            _release_loop(state)
            return False
        decision = state.policy.observe(
            _system.now(), sched, state.cpu, state.allowed, _system.cpu_times, _system.probe
        )
        if decision is None:
            return True
        cpu, why = decision
        target = frozenset({cpu})
        if not _system.set_affinity(state.loop_tid, target):
            return True
        old, state.cpu, state.reason = state.cpu, cpu, why
        state.moves += 1
        _move_agent(state, target)
        if _restore is not None:
            _restore = (_restore[0], target)
        logger.info(
            "span-profiles: moved event-loop thread %d and the profiler's threads %s from CPU %d "
            "to CPU %d (%s)",
            state.loop_tid,
            sorted(state.agent_tids),
            old,
            cpu,
            why,
        )
        return True


# -- undo ---------------------------------------------------------------------------------------


def _release_loop(state: _State) -> None:
    state.loop_tid = state.loop_mask = None
    state.reason = "no event-loop thread is pinned"
    _unprioritise(state)
    for tid in state.agent_tids:
        _system.set_affinity(tid, state.process_mask)
    _unwrap_threads()


def release() -> None:
    """Undo every pin: the loop thread and the agent's threads get their masks back."""
    with _lock:
        state = _state
        loop_tid, loop_mask = state.loop_tid, state.loop_mask
        state.active = False
        state.stop.set()
        if loop_tid is not None and loop_mask is not None:
            _system.set_affinity(loop_tid, loop_mask)
        _release_loop(state)
        state.cpu = None
        state.agent_tids.clear()
        state.sampling_tids = ()
        state.pending.clear()
        state.reason = "the profiler is not running"


def current_placement() -> Placement:
    """Where the sampler and the loop thread are pinned now, and why."""
    with _lock:
        state = _state
        pinned = state.active and state.loop_tid is not None
        return Placement(
            cpu=state.cpu if pinned else None,
            loop_thread=state.loop_tid if pinned else None,
            agent_threads=tuple(sorted(state.agent_tids)) if state.active else (),
            allowed=state.allowed,
            reason=state.reason,
            moves=state.moves,
            sampler_priority=state.priority if pinned else None,
        )


# -- fork ---------------------------------------------------------------------------------------


def _before_fork() -> None:
    global _forking_loop
    _forking_loop = _state.active and _state.loop_tid == threading.get_native_id()


def _after_fork_in_child() -> None:
    global _lock, _state, _forking_loop, _restore
    # Another thread may have held the lock at the fork: it would stay held in the child.
    _lock = threading.RLock()
    old, _state = _state, _State()
    _restore = None
    if _forking_loop and old.loop_mask is not None:
        # The child's only thread inherited the loop's pin; a new process places itself anew.
        _system.set_affinity(0, old.loop_mask)
    _forking_loop = False


def register_fork_hooks() -> None:
    """Undo the pin in a forked child (once per process)."""
    global _fork_hooks
    if _fork_hooks or not hasattr(os, "register_at_fork"):
        return
    _fork_hooks = True
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def in_event_loop() -> bool:
    """Whether the calling thread runs an asyncio loop or a trio run right now."""
    import asyncio

    if asyncio._get_running_loop() is not None:
        return True
    trio = sys.modules.get("trio")
    in_trio_run = getattr(getattr(trio, "lowlevel", None), "in_trio_run", None)
    return bool(in_trio_run()) if callable(in_trio_run) else False
