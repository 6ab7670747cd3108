"""The event ring: records in order, label definitions, losses, never blocking the writer."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from span_profiles._samplers.builtin import ring
from span_profiles._samplers.builtin.ring import RingReader, RingWriter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfd is Linux-only")


def _events(reader: RingReader) -> list[ring.Event | None]:
    return list(reader.drain())


def test_records_come_back_in_order_with_times() -> None:
    writer = RingWriter(slots=64)
    reader = RingReader(writer.fd, 64)
    before = time.monotonic_ns()
    writer.write(ring.TASK, 0x7F00_1234_5678, 3)
    writer.write(ring.THREAD, 4242, 0)
    events = _events(reader)
    assert [(e.kind, e.ident, e.aux) for e in events if e] == [
        (ring.TASK, 0x7F00_1234_5678, 3),
        (ring.THREAD, 4242, 0),
    ]
    assert all(e is not None and before <= e.t <= time.monotonic_ns() for e in events)
    assert _events(reader) == []
    writer.write(ring.END, 3, 0)
    assert [e.kind for e in _events(reader) if e] == [ring.END]


@pytest.mark.parametrize(
    "labels",
    [
        (("span_id", "0123456789abcdef"), ("span_name", "GET /items/{id}")),
        (("span_id", "0123456789abcdef"), ("span_name", "ä" * 300), ("trace_id", "f" * 32)),
        (("k", ""),),
    ],
)
def test_a_definition_carries_its_labels(labels: tuple[tuple[str, str], ...]) -> None:
    writer = RingWriter(slots=128)
    reader = RingReader(writer.fd, 128)
    writer.write(ring.THREAD, 1, 0)
    writer.define(7, labels)
    writer.write(ring.TASK, 2, 7)
    events = [e for e in _events(reader) if e]
    assert [e.kind for e in events] == [ring.THREAD, ring.DEFINE, ring.TASK]
    assert events[1].ident == 7
    assert events[1].labels == labels
    assert reader.lost == 0


def test_a_writer_that_laps_the_reader_loses_records_and_says_so() -> None:
    writer = RingWriter(slots=16)
    reader = RingReader(writer.fd, 16)
    for i in range(40):
        writer.write(ring.THREAD, i, 0)
    events = _events(reader)
    assert None in events
    kept = [e.ident for e in events if e]
    assert kept == sorted(kept)
    assert kept[-1] == 39
    assert reader.lost == 40 - len(kept)
    writer.write(ring.THREAD, 99, 0)
    assert [e.ident for e in _events(reader) if e] == [99]


def test_a_lost_definition_is_skipped_whole() -> None:
    writer = RingWriter(slots=16)
    reader = RingReader(writer.fd, 16)
    writer.define(1, (("span_name", "x" * 100),))  # 6 slots
    for i in range(14):
        writer.write(ring.THREAD, i, 0)
    events = _events(reader)
    assert all(e is None or e.kind == ring.THREAD for e in events)
    assert None in events


def test_many_threads_write_without_losing_or_tearing_records() -> None:
    writer = RingWriter(slots=1 << 14)
    reader = RingReader(writer.fd, 1 << 14)

    def write(n: int) -> None:
        for i in range(2000):
            writer.write(ring.THREAD, n, i)
        writer.define(n + 1000, (("span_id", f"{n:016x}"),))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = [e for e in _events(reader) if e]
    assert reader.lost == 0
    per_thread: dict[int, list[int]] = {}
    for e in events:
        if e.kind == ring.THREAD:
            per_thread.setdefault(e.ident, []).append(e.aux)
    assert all(values == list(range(2000)) for values in per_thread.values())
    definitions = {e.ident: e.labels for e in events if e.kind == ring.DEFINE}
    assert definitions == {n + 1000: (("span_id", f"{n:016x}"),) for n in range(4)}


def test_a_reserved_but_unwritten_slot_holds_the_reader_then_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = RingWriter(slots=16)
    reader = RingReader(writer.fd, 16)
    next(writer._sequence)  # a writer reserved seq 1 and stalls
    writer.write(ring.THREAD, 5, 0)
    assert _events(reader) == []
    monkeypatch.setattr(ring, "_STALL_NS", 0)
    events = _events(reader) + _events(reader)
    assert [e.ident for e in events if e] == [5]
    assert reader.lost == 1


def test_the_sampler_tells_the_app_when_a_read_began() -> None:
    writer = RingWriter(slots=16)
    reader = RingReader(writer.fd, 16)
    assert writer.read_started[0] == 0
    reader.publish_read(123_456_789_012)
    assert writer.read_started[0] == 123_456_789_012
