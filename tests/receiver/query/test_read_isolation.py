"""Reads never hold up ingest: the UI's queries run on their own read-only connections."""

from __future__ import annotations

import http.client
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.receiver import ProfileReader, Receiver
from span_profiles.receiver.ingest.decode import encode_pprof, encode_push_request
from span_profiles.receiver.query import reader as reader_module
from span_profiles.receiver.storage.schema import connect_read_only
from tests.support.receiver import sample, series

pytestmark = pytest.mark.e2e

PUSH = "/push.v1.PusherService/Push"


class HeldQueries:
    """Makes every read-only connection's queries wait while ``hold`` is on (SQLite's progress
    handler, called inside the query, waits on an event: the query is running, and stays so)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.released.set()
        self.waiting = threading.Event()

    def progress(self) -> int:
        if not self.released.is_set():
            self.waiting.set()
            self.released.wait(60)
        return 0

    def connect(self, path: Path, timeout: float) -> sqlite3.Connection:
        db = _connect_read_only(path, timeout)
        db.set_progress_handler(self.progress, 1)
        return db


_connect_read_only = connect_read_only


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldQueries:
    """Read-only connections whose queries can be held mid-query."""
    queries = HeldQueries()
    monkeypatch.setattr(reader_module, "connect_read_only", queries.connect)
    return queries


@pytest.fixture
def receiver(db_path: Path, held: HeldQueries) -> Iterator[Receiver]:
    """A receiver whose reader's connections are held on demand."""
    with Receiver("127.0.0.1", 0, db_path) as running:
        yield running


def _push(receiver: Receiver, number: int) -> float:
    """Push one upload of 2 samples; the seconds until its reply."""
    one = series([sample([f"f{number}", "main"], 2, [("span_name", "GET /x")])])
    body = encode_push_request([(one.labels, [encode_pprof(one.profiles[0])])])
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    try:
        start = time.perf_counter()
        connection.request("POST", PUSH, body=body, headers={"content-type": "application/proto"})
        assert connection.getresponse().status == 200
        return time.perf_counter() - start
    finally:
        connection.close()


def test_ingest_latency_is_unchanged_during_a_long_query(
    receiver: Receiver, held: HeldQueries, db_path: Path
) -> None:
    """While an overview query is held running on the UI's connection, uploads are stored as fast
    as before it started, and the query then completes: reads share no lock or connection with
    the writer."""
    before = [_push(receiver, number) for number in range(10)]
    held.released.clear()
    result: list[int] = []

    def overview() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=60)
        try:
            connection.request("GET", "/api/overview?since=all")
            result.append(connection.getresponse().status)
        finally:
            connection.close()

    query = threading.Thread(target=overview)
    query.start()
    try:
        assert held.waiting.wait(10), "the overview query never started"
        during = [_push(receiver, number) for number in range(10, 20)]
        # The query is still inside SQLite, on the reader's connection, while all of that ran.
        assert query.is_alive()
        assert not result
    finally:
        held.released.set()
        query.join(30)
    assert result == [200]
    # Unchanged: no upload waited for the query (it was held for all of them); the bound leaves
    # room for a loaded machine's noise, far below the time the query was held.
    assert statistics.median(during) < max(3 * statistics.median(before), 0.25)
    with ProfileReader(db_path) as reader:
        assert reader.total_count() == 20 * 2
