"""Which labels a sample carries: the state of its identity just before the read began.

Every sample names an identity read together with its stack (a task, or a thread outside any
task) and a read window ``[t0, t1]``. The ring's events say when each identity's labels changed.
A sample takes the labels its identity had before ``t0``; if its identity changed inside the
window (the read may have seen either side), the sample is dropped and counted. Labels ids
resolve through renames and span ends at ``t0`` too.

Identities are reused: task ids are addresses and thread ids recur. A task's creation is an
event (the new task's labels), so a reused address starts over at its creation; a thread gets
events whenever its labels change (a job starts or ends), so a reused thread id starts with no
labels until its first job. What is known is kept while it can still matter: the last state of
each identity that has labels of a live span, and the history since the oldest sample not yet
attributed.

Standard library only: this module runs in the sampler process.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import NamedTuple

from span_profiles._samplers.builtin import ring
from span_profiles._samplers.builtin.ring import Event, Labels

__all__ = ["Attributor", "Labels", "Outcome"]

EMPTY: Labels = ()

Key = tuple[int, int]
"""``(ring.TASK, task id)`` or ``(ring.THREAD, native thread id)``."""


class Outcome(NamedTuple):
    """The labels of a sample, or why it was dropped (``labels`` is then ``None``)."""

    labels: Labels | None
    reason: str = ""


_CHANGED = Outcome(None, "changed")
_LOST = Outcome(None, "lost")
_NONE = Outcome(EMPTY)


class _Timeline:
    __slots__ = ("lids", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.lids: list[int] = []

    def add(self, t: int, lid: int) -> None:
        if not self.times or t >= self.times[-1]:
            self.times.append(t)
            self.lids.append(lid)
            return
        # Events of one identity come from different threads now and then (a rename, an end).
        i = bisect.bisect_right(self.times, t)
        self.times.insert(i, t)
        self.lids.insert(i, lid)


class Attributor:
    """Keeps the identity timelines from the ring and attributes samples against them."""

    def __init__(self) -> None:
        self._timelines: dict[Key, _Timeline] = {}
        self._labels: dict[int, Labels] = {0: EMPTY}
        self._renamed: dict[int, tuple[int, int]] = {}
        self._ended: dict[int, int] = {}
        self._eager: dict[int, list[tuple[int, int, int]]] = {}
        """Thread -> ``(begin, end or 0, lid)`` of task creations that may run a first step."""
        self._open_eager: dict[int, tuple[int, int]] = {}
        self._losses: list[tuple[int, int]] = []
        """``(last event before, first event after)`` of each loss of events."""
        self._last_t = 0
        self._lost_pending = False
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[int, int] = {}
        """Labels id -> when an identity first took it (a request's start, for wall time)."""

    # -- events ----------------------------------------------------------------------------------

    def add(self, event: Event | None) -> None:
        """Take one event from the ring (``None``: events were lost here)."""
        if event is None:
            self._lost_pending = True
            return
        t = event.t
        if self._lost_pending:
            self._lost_pending = False
            self._losses.append((self._last_t, t))
        self._last_t = max(self._last_t, t)
        kind = event.kind
        if kind == ring.TASK or kind == ring.THREAD:
            key = (kind, event.ident)
            timeline = self._timelines.get(key)
            if timeline is None:
                timeline = self._timelines[key] = _Timeline()
            timeline.add(t, event.aux)
            if event.aux and event.aux not in self.first_seen:
                self.first_seen[event.aux] = t
        elif kind == ring.DEFINE:
            self._labels[event.ident] = event.labels
        elif kind == ring.RENAME:
            self._renamed[event.ident] = (t, event.aux)
        elif kind == ring.END:
            self._ended[event.ident] = t
        elif kind == ring.EAGER:
            self._open_eager[event.ident] = (t, event.aux)
        elif kind == ring.EAGER_END:
            begun = self._open_eager.pop(event.ident, None)
            if begun is not None:
                self._eager.setdefault(event.ident, []).append((begun[0], t, begun[1]))

    # -- samples ---------------------------------------------------------------------------------

    def resolve(self, lid: int, at: int) -> Labels:
        """The labels that id ``lid`` stands for at time ``at`` (renames and ends applied)."""
        for _ in range(64):  # a rename chain; bounded against a cycle
            renamed = self._renamed.get(lid)
            if renamed is None or renamed[0] > at:
                break
            lid = renamed[1]
        ended = self._ended.get(lid)
        if ended is not None and ended <= at:
            return EMPTY
        return self._labels.get(lid, EMPTY)

    def lid_at(self, kind: int, ident: int, at: int) -> int:
        """The labels id identity ``(kind, ident)`` had just before ``at`` (0: none known)."""
        timeline = self._timelines.get((kind, ident))
        if timeline is None:
            return 0
        before = bisect.bisect_left(timeline.times, at)
        return timeline.lids[before - 1] if before else 0

    def final(self, lid: int, at: int) -> int:
        """The labels id that ``lid`` stands for at ``at`` after renames."""
        for _ in range(64):
            renamed = self._renamed.get(lid)
            if renamed is None or renamed[0] > at:
                break
            lid = renamed[1]
        return lid

    def ended_at(self, lid: int) -> int | None:
        """When labels ``lid`` (after renames) ended, if they did."""
        return self._ended.get(self.final(lid, 1 << 62))

    def threads(self) -> list[int]:
        """Native ids of the threads with a known timeline."""
        return [ident for kind, ident in self._timelines if kind == ring.THREAD]

    def attribute(self, tid: int, task: int, t0: int, t1: int) -> Outcome:
        """The labels of a sample of thread ``tid`` running ``task`` (0: no task) read in
        ``[t0, t1]``; counted in :attr:`counts` by outcome."""
        outcome = self._attribute(tid, task, t0, t1)
        self.counts[outcome.reason or ("labelled" if outcome.labels else "unlabelled")] += 1
        return outcome

    def _attribute(self, tid: int, task: int, t0: int, t1: int) -> Outcome:
        key = (ring.TASK, task) if task else (ring.THREAD, tid)
        timeline = self._timelines.get(key)
        lid: int | None = None
        since = 0
        if timeline is not None:
            times = timeline.times
            before = bisect.bisect_left(times, t0)
            if before < len(times) and times[before] <= t1:
                return _CHANGED
            if before:
                lid = timeline.lids[before - 1]
                since = times[before - 1]
        if lid is None and task:
            # Not created through a hook yet: an eager first step inside create_task?
            for begin, end, eager_lid in reversed(self._eager.get(tid, ())):
                if begin <= t0 and t1 <= end:
                    lid, since = eager_lid, begin
                    break
            else:
                opened = self._open_eager.get(tid)
                if opened is not None and opened[0] <= t0:
                    lid, since = opened[1], opened[0]
        if self._losses and self._losses[-1][0] < t1:
            # Events were lost: what is known about this identity holds only if it was learnt
            # after the loss.
            for last_before, first_after in reversed(self._losses):
                if last_before >= t1:
                    continue
                if since < first_after:
                    return _LOST
                break
        if lid is None or lid == 0:
            return _NONE
        return Outcome(self.resolve(lid, t0))

    # -- memory ----------------------------------------------------------------------------------

    def forget_before(self, horizon: int) -> None:
        """Drop what no sample at or after ``horizon`` can need."""
        live: set[int] = set()
        for key, timeline in list(self._timelines.items()):
            times = timeline.times
            keep_from = max(bisect.bisect_left(times, horizon) - 1, 0)
            if keep_from:
                del times[:keep_from]
                del timeline.lids[:keep_from]
            if len(times) == 1 and times[0] < horizon:
                lid = timeline.lids[0]
                if lid == 0 or self._dead(lid, horizon):
                    # Unknown and "no labels" give the same answer: nothing to keep.
                    del self._timelines[key]
                    continue
            live.update(timeline.lids)
        for lid in list(self._labels):
            if lid and lid not in live and self._dead(lid, horizon):
                del self._labels[lid]
                self._ended.pop(lid, None)
                self._renamed.pop(lid, None)
                self.first_seen.pop(lid, None)
        for lid in [lid for lid in self.first_seen if lid not in self._labels]:
            del self.first_seen[lid]
        for tid, spans in list(self._eager.items()):
            kept = [span for span in spans if span[1] >= horizon]
            if kept:
                self._eager[tid] = kept
            else:
                del self._eager[tid]
        # Losses stay: an identity last heard of before one is not trusted until it is heard of
        # again (a bounded list: a sampler that keeps losing events drops more, never less).
        del self._losses[:-1000]

    def _dead(self, lid: int, horizon: int) -> bool:
        """Whether labels ``lid`` ended (directly or after renames) before ``horizon``."""
        for _ in range(64):
            renamed = self._renamed.get(lid)
            if renamed is None:
                break
            if renamed[0] >= horizon:
                return False
            lid = renamed[1]
        ended = self._ended.get(lid)
        return ended is not None and ended < horizon

    def __len__(self) -> int:
        return len(self._timelines)
