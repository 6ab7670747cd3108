"""Worker threads switch labels only when no sample is between its stack read and its label read.

Two of the agent's threads take part in a sample: py-spy's sampler reads every thread's stack and
hands the sample over a channel to the agent's thread that looks up each thread's labels, 10-250 µs
after the stack read. A worker thread that ends job A and starts job B inside that window gives
A's last sample B's labels (or none). The event-loop thread avoids this by sharing a CPU with both
threads; worker threads keep every CPU, so they wait instead: right before a job's labels go on
or off, :func:`wait` holds the switch while the sampler or the labelling thread runs, and while a
sample the sampler handed over has not been labelled yet (the sampler's clock moved since the
last switch and the labeller's did not), for at most :data:`MAX_WAIT_NS`, yielding its CPU
meanwhile (the GIL kept).

"Running" is read from the threads' CPU clocks (``clock_gettime`` on the Linux per-thread clock
of a native thread id): a thread on a CPU shows a clock that advances between two reads. The
reads are syscalls that keep the GIL (no ``/proc`` read, no hand-over to another Python thread),
about 1 µs each here. A sample takes 0.1-0.3 ms of each 10 ms period, so nearly every switch goes
ahead at the first look.

Linux only; elsewhere, before the two threads are found and with ``wait_for_sampler=false``,
:func:`wait` returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable

from span_profiles._core import guard

logger = logging.getLogger("span_profiles")

__all__ = ["MAX_WAIT_NS", "clock_of", "unwatch", "wait", "watch", "watched"]

MAX_WAIT_NS = 5_000_000
"""Longest wait for one switch. A sample takes 0.1-0.3 ms, but the labelling thread shares the
event loop's CPU and may wait a scheduler slice for it; with a 1 ms bound 0.3-0.8 % of
thread-pool samples on the stdlib loop still lost their labels, with 5 ms none did."""

_SETTLE_S = 0.1
"""How long after ``configure()`` the agent's threads are first looked at."""

_ATTEMPTS = 20
"""Searches before giving up: py-spy starts its sampler a moment after ``configure()`` returns."""

_ROUNDS = 20
_ROUND_S = 0.011
"""Rounds a little longer than one sample period at 100 Hz, so a sampling thread runs in most."""

_MIN_SHARE = 1 / 3
"""Share of the rounds a thread must have run in to count as sampling (the others run ~never)."""

_BUSY_THREADS = 2
"""py-spy's sampling thread, and the agent thread that applies labels to what it read."""

_clocks: tuple[int, ...] = ()
"""The sampler's clock, then the clock of the thread that applies labels (when found)."""
_settled: tuple[int, ...] = ()
"""Their readings when a switch last went ahead: the sampler has not run since, or has been
followed by the labelling thread. Rebound whole (never changed in place), so a worker thread
reads a consistent pair while another one stores a new one, with or without the GIL."""
_generation = 0
"""Bumped by :func:`watch` and :func:`unwatch`: a search that started earlier keeps quiet."""


def _no_clock(clock: int) -> int:
    return 0


def _no_yield() -> int:
    return 0


# Windows has no clock_gettime; the gate only ever watches on Linux.
_clock: Callable[[int], int] = getattr(time, "clock_gettime_ns", _no_clock)
_now = time.perf_counter_ns


_yield: Callable[[], int] = _no_yield
"""``sched_yield()`` called with the GIL held (set by :func:`watch`)."""


def clock_of(tid: int) -> int:
    """The Linux CPU-time clock id of native thread ``tid`` (``MAKE_THREAD_CPUCLOCK``)."""
    return ((~tid) << 3) | 6


def watch(
    agent_threads: Callable[[], Iterable[int]],
    *,
    gate: bool = True,
    found: Callable[[tuple[int, ...]], None] | None = None,
) -> None:
    """Find the agent's sampling threads among ``agent_threads()``; watch them if ``gate``.

    ``found`` is called with their native ids, sampler first, once they are found (placement
    raises their scheduling priority).

    ``agent_threads`` lists the native threads the agent may own (``_profiler`` passes the native
    threads that appeared since just before ``configure()``). py-spy starts its sampling thread
    some time after ``configure()`` returns, and the agent has more threads than the two that
    take part in a sample (an HTTP client, idle helpers), so a daemon thread waits
    :data:`_SETTLE_S`, then keeps those that ran in most of :data:`_ROUNDS` rounds of one sample
    period: the sampler and the thread that applies labels run in every period, the others only
    at uploads.
    """
    global _clocks, _generation, _yield
    if not sys.platform.startswith("linux"):
        return
    _clocks = ()
    _generation += 1
    _yield = _gil_holding_yield()
    search = threading.Thread(
        target=_find,
        args=(agent_threads, _generation, gate, found),
        name="span-profiles-sampler-watch",
        daemon=True,
    )
    search.start()


def unwatch() -> None:
    """Stop waiting (agent stopped, or in a forked child, where the agent's threads are gone)."""
    global _clocks, _generation
    _clocks = ()
    _generation += 1


def watched() -> tuple[int, ...]:
    """The clock ids :func:`wait` checks now."""
    return _clocks


def _gil_holding_yield() -> Callable[[], int]:
    # A waiting worker may sit on the very CPU the agent's threads are pinned to, keeping them
    # from finishing the sample it waits for: it yields that CPU. os.sched_yield() would release
    # the GIL, and winning it back can take a switch interval (5 ms); a PyDLL call keeps it.
    try:
        import ctypes

        function = ctypes.PyDLL(None).sched_yield
    except (OSError, AttributeError):
        return _no_yield
    function.argtypes = []
    function.restype = ctypes.c_int
    return function


def _find(
    agent_threads: Callable[[], Iterable[int]],
    generation: int,
    gate: bool,
    found: Callable[[tuple[int, ...]], None] | None,
) -> None:
    global _clocks, _settled
    try:
        time.sleep(_SETTLE_S)
        for _ in range(_ATTEMPTS):
            busy = _busy_threads(agent_threads)
            if generation != _generation:
                return
            if len(busy) == _BUSY_THREADS:
                tids = tuple(~(clock >> 3) for clock in busy)
                if gate:
                    _settled = tuple(_clock(c) for c in busy)
                    _clocks = tuple(busy)
                    logger.debug(
                        "span-profiles: worker-thread label switches wait for threads %s", tids
                    )
                if found is not None:
                    found(tids)
                return
        logger.debug("span-profiles: the profiler's sampling threads were not found")
    except Exception as exc:
        guard.fail("finding the profiler's sampling threads", exc, unwatch)


def _busy_threads(agent_threads: Callable[[], Iterable[int]]) -> list[int]:
    """Clocks of the threads that ran in most rounds, the one that used most CPU first."""
    last: dict[int, int] = {}
    for tid in agent_threads():
        clock = clock_of(tid)
        with contextlib.suppress(OSError):  # the thread exited since the listing
            last[clock] = _clock(clock)
    first = dict(last)
    ran = dict.fromkeys(last, 0)
    for _ in range(_ROUNDS):
        time.sleep(_ROUND_S)
        for clock in list(last):
            try:
                value = _clock(clock)
            except OSError:
                del last[clock]
                continue
            ran[clock] += value != last[clock]
            last[clock] = value
    busy = [c for c in last if ran[c] >= _MIN_SHARE * _ROUNDS]
    # The sampler reads every stack and uses most CPU; the thread that applies labels runs after
    # it in each period.
    busy.sort(key=lambda c: last[c] - first[c], reverse=True)
    return busy[:_BUSY_THREADS]


def wait() -> None:
    """Return once the agent is not between reading a stack and reading its labels.

    That is: neither watched thread runs, and if the sampler ran since the last switch, the
    labelling thread ran after it (between the two, the sampler has handed a sample over that
    still waits for its labels). Gives up after :data:`MAX_WAIT_NS`.
    """
    global _settled
    clocks = _clocks
    if not clocks:
        return
    try:
        settled = _settled
        deadline = 0
        while True:
            first = tuple([_clock(clock) for clock in clocks])
            now = tuple([_clock(clock) for clock in clocks])
            if first == now and (now[0] == settled[0] or now[1] != settled[1]):
                break
            now_ns = _now()
            if not deadline:
                deadline = now_ns + MAX_WAIT_NS
            elif now_ns >= deadline:
                break
            _yield()
        _settled = now
    except Exception as exc:
        guard.fail("waiting for the sampler before a worker-thread label switch", exc, unwatch)
