"""Elapsed-time weighting of wall samples, shared by both producers (standard library only).

Each request is *visited* now and then: a producer reads what the request is doing at that
moment (the stacks it waits in) and tells :meth:`Account.visit`. The time since the request's
previous visit (or its start) goes to those stacks (the state at the end of an interval stands
for the interval, and when the request moved on since the previous visit the interval is split
in half between the two: a part of ``d`` seconds gets ``d`` give or take half an interval at
each end, unless the producer knows when the request first ran again after its last visit,
which splits the interval there), less the time already given to the request's
on-CPU samples meanwhile (:meth:`Account.on_cpu`); several stacks at once (a ``gather`` of three
children) share it equally. So a request's wall total is its duration however rarely it is
visited: visiting a subset of the requests per read (:class:`RoundRobin`), or reading less
often, changes how finely the time is placed, never how much of it there is. A request's last
interval, from its last visit to its end, goes to the stacks it was last seen waiting in.

A visit that finds nothing to show (none of the request's tasks could be read) keeps the time
for the next visit. On-CPU time above the elapsed time (two threads of a request on CPUs at once)
is carried as a debt against later waiting time.

Stacks are opaque here (any hashable the producer's ``emit`` understands).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Account", "RoundRobin"]

Labels = tuple[tuple[str, str], ...]
Emit = Callable[[Any, Labels, int, int], None]
"""``emit(stack, labels, nanoseconds, at)``: one weighted sample, ``at`` the visit's time."""


class _Open:
    __slots__ = ("cpu", "labels", "last", "waits")

    def __init__(self, labels: Labels, last: int) -> None:
        self.labels = labels
        self.last = last
        self.cpu = 0
        """On-CPU nanoseconds given since ``last`` (or a debt carried past it)."""
        self.waits: Sequence[Any] = ()


class Account:
    """The open requests and the time each has been given."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._open: dict[Hashable, _Open] = {}
        self.given = 0
        """Nanoseconds given so far (on CPU and waiting), over every request."""
        self.kept = 0
        """Visits that found no stack and kept their time for later."""

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._open

    def seen_waiting(self, key: Hashable) -> bool:
        """Whether a visit has found the open request ``key`` waiting somewhere."""
        state = self._open.get(key)
        return state is not None and bool(state.waits)

    def open_keys(self) -> list[Hashable]:
        """The open requests."""
        return list(self._open)

    def begin(self, key: Hashable, labels: Labels, at: int) -> None:
        """Request ``key`` exists from ``at`` on (ignored when it is open already)."""
        if key not in self._open:
            self._open[key] = _Open(labels, at)

    def on_cpu(self, key: Hashable, stack: Any, labels: Labels, value: int, at: int) -> None:
        """``value`` ns of the request on CPU in ``stack`` (emitted now, counted against the
        request's next waiting time). Opens the request at ``at - value`` if it is not open."""
        if value <= 0:
            return
        state = self._open.get(key)
        if state is None:
            state = self._open[key] = _Open(labels, at - value)
        state.labels = labels
        state.cpu += value
        self.given += value
        self._emit(stack, labels, value, at)

    def visit(
        self,
        key: Hashable,
        labels: Labels,
        at: int,
        waits: Sequence[Any],
        moved: int = 0,
        settled: int = 0,
        unseen: Any = None,
    ) -> None:
        """The request waits in ``waits`` (stacks) at ``at``: give it the time since its last
        visit, less its on-CPU time meanwhile. Opens the request at ``at`` if it is not open
        (its time before the first visit is not known).

        What the producer may know besides: ``moved``, when the request first ran again after
        its last visit (the time up to then goes to the stacks it was seen waiting in before);
        ``settled``, when it last changed (ran, or a job of it started or ended) before ``at``:
        on its first visit, the time up to then, less its on-CPU time, goes to ``unseen`` (it
        was starting: where it waited then was not seen) rather than to ``waits``.
        """
        state = self._open.get(key)
        if state is None:
            self._open[key] = state = _Open(labels, at)
        state.labels = labels
        if not waits:
            self.kept += 1
            return
        if state.last < moved < at and state.waits:
            self._give(state, moved, spend_cpu=False)
        elif not state.waits and unseen is not None and state.last < settled < at:
            state.waits = (unseen,)
            self._give(state, settled)
        elif not moved and state.waits and waits != state.waits:
            # It moved on at an unknown moment since the last visit: half of the interval to
            # where it was, half to where it is (half the error of giving it all to either).
            self._give(state, state.last + (at - state.last) // 2)
        state.waits = waits
        self._give(state, at)

    def _give(self, state: _Open, at: int, spend_cpu: bool = True) -> None:
        elapsed = at - state.last
        if elapsed <= 0:
            return
        waiting = elapsed - state.cpu if spend_cpu else elapsed
        state.last = at
        if not spend_cpu:
            self._spread(state, waiting, at)
            return
        if waiting <= 0:
            state.cpu = -waiting  # more on CPU than elapsed: a debt against later waits
            return
        state.cpu = 0
        self._spread(state, waiting, at)

    def _spread(self, state: _Open, waiting: int, at: int) -> None:
        waits = state.waits
        if not waits or waiting <= 0:
            return  # nothing seen yet: counted nowhere
        share, rest = divmod(waiting, len(waits))
        for index, stack in enumerate(waits):
            value = share + (rest if index == 0 else 0)
            if value:
                self._emit(stack, state.labels, value, at)
        self.given += waiting

    def end(self, key: Hashable, at: int, moved: int = 0, after: Any = None) -> bool:
        """Request ``key`` ended at ``at``: its last interval goes to the stacks it was last
        seen waiting in, or, when the producer knows that it ran again at ``moved`` since its
        last visit, only the time up to then; the rest, less its on-CPU time, goes to
        ``after`` (where it ran: it ended running). Whether it was open."""
        state = self._open.pop(key, None)
        if state is None:
            return False
        if after is not None and state.last < moved < at:
            if state.waits:
                self._give(state, moved, spend_cpu=False)
            state.waits = (after,)
        self._give(state, at)
        return True

    def end_all(self, at: int) -> None:
        """Every open request's time up to ``at`` (the producer stops)."""
        for key in list(self._open):
            self.end(key, at)


K = TypeVar("K", bound=Hashable)


class RoundRobin(Generic[K]):
    """Which requests to visit next, a bounded number at a time, each in turn.

    :meth:`add` queues a request once; :meth:`take` yields queued requests in order until the
    caller stops (a budget of time or count), each put back at the end; :meth:`discard` takes
    one out at once. Every request is visited once per round, so none waits longer than a round.
    """

    def __init__(self) -> None:
        # Ordered, with removal anywhere in O(1): a request that ends leaves at once, however
        # far its turn is (when the ticks were spent on ending requests, a lazily skipped
        # queue held every request ever begun: 12,800 after 15 s at 1,000 in flight).
        self._queue: OrderedDict[K, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        """Queue ``key`` (once)."""
        if key not in self._queue:
            self._queue[key] = None

    def discard(self, key: K) -> None:
        """Stop visiting ``key``."""
        self._queue.pop(key, None)

    def take(self, limit: int) -> Generator[K, None, None]:
        """Up to ``limit`` queued keys, each requeued behind the others as it is taken."""
        queue = self._queue
        for _ in range(min(limit, len(queue))):
            if not queue:
                return
            key = next(iter(queue))
            queue.move_to_end(key)
            yield key
