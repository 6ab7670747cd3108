"""The event ring: small timestamped records from the app to the sampler, in shared memory.

The app writes one 32-byte record per identity change (``identity -> labels``) into a
``memfd`` mapping shared with the sampler process: a ``struct.pack_into`` into a slot, no system
call, never blocking. The sampler reads the records in sequence order and uses their
``CLOCK_MONOTONIC`` timestamps to know which labels an identity had when a stack was read.

Record: ``t`` (``time.monotonic_ns()``), ``ident``, ``aux``, ``kind``, then ``seq`` last
(``struct`` packs fields in order, so a reader that sees the expected ``seq`` sees the record).
Slot ``seq % slots`` holds record ``seq``; ``seq`` starts at 1, so a zero slot is unwritten.
A page after the slots goes the other way: the sampler writes there when it last began reading
every task (:attr:`RingReader.publish_read`), so the app can tell which task steps are the first
since then (:data:`RAN`).
Sequence numbers come from ``itertools.count`` (atomic under the GIL), several at once through
``islice`` for a multi-slot record (label definitions: a head record, then the text in 20-byte
pieces, each piece with its own ``seq``).

When the sampler falls a whole ring behind, the writer overwrites records it did not read: the
reader notices (a slot holds a later ``seq``), counts the loss and tells the caller, which stops
trusting what it knew before (:class:`~.attribution.Attributor`). The app never waits.

Standard library only: the reader runs in the sampler process.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = [
    "DEFINE",
    "EAGER",
    "EAGER_END",
    "END",
    "RAN",
    "RENAME",
    "SLOT",
    "TASK",
    "THREAD",
    "Event",
    "RingReader",
    "RingWriter",
    "decode_labels",
    "encode_labels",
]

SLOT = 32
_RECORD = struct.Struct("<QQIB3xQ")
_PIECE = struct.Struct("<20sB3xQ")
_STAMP = struct.Struct("=Q")
"""Native order: the app reads the stamp through a ``memoryview`` cast."""
_PIECE_BYTES = 20
_PIECE_KIND = 8
"""Kind byte of a definition's text pieces (where a record has its kind), so a reader that lost
a definition's head never takes a piece for a record."""

TASK = 1
"""``ident`` = a task's id: from now on it runs with labels ``aux``."""
THREAD = 2
"""``ident`` = a native thread id: outside asyncio tasks it runs with labels ``aux``."""
DEFINE = 3
"""``ident`` = a labels id; ``aux`` bytes of text follow in the next slots."""
RENAME = 4
"""Labels ``ident`` are replaced by labels ``aux`` (the span was renamed)."""
END = 5
"""Labels ``ident`` are over (the span ended): they stand for no labels from now on."""
EAGER = 6
"""Thread ``ident`` creates a task with labels ``aux`` whose first step may run right here."""
EAGER_END = 7
"""Thread ``ident`` finished creating that task."""

RAN = 9
"""``ident`` = a task's id: it runs now, for the first time since the sampler last began reading
every task (wall-clock profiles: when it moved on from where that read found it waiting)."""

_STALL_NS = 1_000_000_000
"""A reserved slot still unwritten after this long, with later ones written, is skipped."""

Labels = tuple[tuple[str, str], ...]


def _header_offset(slots: int) -> int:
    return -(-slots * SLOT // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY


def encode_labels(labels: Labels) -> bytes:
    """Label pairs as text: keys and values separated by NUL."""
    return "\0".join(part for pair in labels for part in pair).encode("utf-8", "surrogatepass")


def decode_labels(data: bytes) -> Labels:
    """The inverse of :func:`encode_labels`."""
    parts = data.decode("utf-8", "surrogatepass").split("\0") if data else []
    return tuple(zip(parts[::2], parts[1::2], strict=True))


class RingWriter:
    """The app's side: owns the shared memory; :attr:`write` is the hot call."""

    def __init__(self, slots: int = 1 << 16) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.slots = slots
        self.fd = os.memfd_create("span-profiles-events", os.MFD_CLOEXEC)
        header = _header_offset(slots)
        os.ftruncate(self.fd, header + mmap.PAGESIZE)
        self.buffer = mmap.mmap(self.fd, header + mmap.PAGESIZE)
        self.read_started = memoryview(self.buffer)[header : header + 8].cast("Q")
        """``read_started[0]``: when the sampler last began reading every task (0: never)."""
        self._sequence = itertools.count(1)
        self.write = self._make_write()
        """``write(kind, ident, aux)``: one record, timestamped now."""

    def _make_write(self) -> Callable[[int, int, int], None]:
        def write(
            kind: int,
            ident: int,
            aux: int,
            _next: Callable[[], int] = self._sequence.__next__,
            _pack: Callable[..., None] = _RECORD.pack_into,
            _buffer: mmap.mmap = self.buffer,
            _now: Callable[[], int] = time.monotonic_ns,
            _mask: int = self.slots - 1,
        ) -> None:
            seq = _next()
            _pack(_buffer, (seq & _mask) * SLOT, _now(), ident, aux, kind, seq)

        return write

    def define(self, lid: int, labels: Labels) -> None:
        """Announce labels id ``lid`` (before any record refers to it)."""
        data = encode_labels(labels)
        pieces = -(-len(data) // _PIECE_BYTES)
        sequences = list(itertools.islice(self._sequence, pieces + 1))
        mask = self.slots - 1
        for i in range(pieces):
            seq = sequences[i + 1]
            chunk = data[i * _PIECE_BYTES : (i + 1) * _PIECE_BYTES]
            _PIECE.pack_into(self.buffer, (seq & mask) * SLOT, chunk, _PIECE_KIND, seq)
        head = sequences[0]
        _RECORD.pack_into(
            self.buffer, (head & mask) * SLOT, time.monotonic_ns(), lid, len(data), DEFINE, head
        )

    def close(self) -> None:
        """Stop writing and close the file (the mapping goes with its last user: a hook may
        still be in a write; the sampler keeps its own mapping)."""
        self.write = _discard
        os.close(self.fd)


def _discard(kind: int, ident: int, aux: int) -> None:
    return None


class Event(NamedTuple):
    """One record as the reader sees it; ``labels`` only for :data:`DEFINE`."""

    kind: int
    t: int
    ident: int
    aux: int
    labels: Labels = ()


class RingReader:
    """The sampler's side: reads records in order, notices losses."""

    def __init__(self, fd: int, slots: int) -> None:
        self.slots = slots
        self.buffer = mmap.mmap(fd, slots * SLOT, prot=mmap.PROT_READ)
        self._header = mmap.mmap(fd, mmap.PAGESIZE, offset=_header_offset(slots))
        self.next = 1
        self.lost = 0
        """Records overwritten or skipped before they were read."""
        self._stalled_since = 0

    def publish_read(self, at: int) -> None:
        """Tell the app that a read of every task began at ``at`` (see :data:`RAN`)."""
        _STAMP.pack_into(self._header, 0, at)

    def _slot(self, seq: int) -> int:
        return (seq & (self.slots - 1)) * SLOT

    def _seq_at(self, seq: int) -> int:
        return int.from_bytes(self.buffer[self._slot(seq) + 24 : self._slot(seq) + 32], "little")

    def drain(self, limit: int = 1 << 20) -> Iterator[Event | None]:
        """The records written since the last call, in order; ``None`` where records were lost."""
        buffer = self.buffer
        for _ in range(limit):
            seq = self.next
            found = self._seq_at(seq)
            if found > seq:
                # The writer lapped us: everything up to one ring before ``found`` is gone.
                resume = max(found - self.slots + 1, seq + 1)
                self.lost += resume - seq
                self.next = resume
                yield None
                continue
            if found < seq:
                if self._skip_stall(seq):
                    yield None
                    continue
                return
            self._stalled_since = 0
            t, ident, aux, kind, _ = _RECORD.unpack_from(buffer, self._slot(seq))
            if kind == _PIECE_KIND:
                self.next = seq + 1  # inside a definition whose head was lost
                continue
            if kind != DEFINE:
                self.next = seq + 1
                yield Event(kind, t, ident, aux)
                continue
            pieces = -(-aux // _PIECE_BYTES)
            data = bytearray()
            for i in range(1, pieces + 1):
                chunk, piece_kind, written = _PIECE.unpack_from(buffer, self._slot(seq + i))
                if written != seq + i or piece_kind != _PIECE_KIND:
                    break
                data += chunk
            else:
                self.next = seq + pieces + 1
                yield Event(kind, t, ident, aux, decode_labels(bytes(data[:aux])))
                continue
            # Pieces are written before their head: a missing one was overwritten.
            self.lost += 1
            self.next = seq + 1
            yield None

    def _skip_stall(self, seq: int) -> bool:
        """A reserved slot is unwritten: skip it once later slots are written and it waited long."""
        later = self._seq_at(seq + 1)
        if later <= seq:
            self._stalled_since = 0
            return False
        now = time.monotonic_ns()
        if not self._stalled_since:
            self._stalled_since = now
            return False
        if now - self._stalled_since < _STALL_NS:
            return False
        self._stalled_since = 0
        self.lost += 1
        self.next = seq + 1
        return True
