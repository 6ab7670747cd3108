"""The read API (ProfileReader, Selection): every query, its rollups against the samples; no
protobuf needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from span_profiles.receiver import (
    FunctionStat,
    ProfileReader,
    ProfileStore,
    Selection,
    SpanStat,
)
from tests.support.receiver import PERIOD, sample, series
from tests.support.servers import ROOT

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"


def top(stats: list[FunctionStat]) -> list[tuple[str, int, int]]:
    """``(name, self, total)`` of each function, in order."""
    return [(s.name, s.self_count, s.total_count) for s in stats]


def listed(stats: list[SpanStat]) -> list[tuple[str, str | None, int, float]]:
    """``(span_id, span_name, samples, last seen)`` of each span, in order."""
    return [(s.span_id, s.span_name, s.sample_count, s.last_seen) for s in stats]


def test_top_self_total_and_recursion(db_path: Path) -> None:
    """top() counts self at the leaf, total once per sample even for recursion, sorted self then total."""
    samples = [
        sample(["fib", "fib", "fib", "main"], 4),
        sample(["work", "fib", "main"], 2),
        sample(["main"], 1),
        sample(["io", "main"], 4),
    ]
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series(samples)])
        assert reader.top() == [
            FunctionStat("fib", 4, 6, 6 * PERIOD),
            FunctionStat("io", 4, 4, 4 * PERIOD),
            FunctionStat("work", 2, 2, 2 * PERIOD),
            FunctionStat("main", 1, 11, 11 * PERIOD),
        ]
        assert reader.top(limit=2) == reader.top()[:2]
        assert reader.total_count() == 11


def test_span_filters_match_each_of_several_span_ids(db_path: Path) -> None:
    """A sample carrying several span ids matches a filter on each of them."""
    samples = [
        sample(["a"], 2, [("span_id", A), ("span_name", "GET /a")]),
        sample(["shared"], 5, [("span_id", A), ("span_id", B)]),
        sample(["b"], 3, [("span_id", B), ("span_name", "GET /b")]),
        sample(["none"], 7),
    ]
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series(samples)])
        assert [s.name for s in reader.top(Selection(span_ids=(A,)))] == ["shared", "a"]
        assert [s.name for s in reader.top(Selection(span_ids=(B,)))] == ["shared", "b"]
        assert reader.top(Selection(span_ids=(C,))) == []
        assert top(reader.top(Selection(span_names=("GET /b",)))) == [("b", 3, 3)]
        assert reader.total_count(Selection(span_ids=(A,))) == 7
        assert [s.functions for s in reader.samples(Selection(span_ids=(B,)))] == [
            ("shared",),
            ("b",),
        ]


def test_spans_most_recent_first_with_names(db_path: Path) -> None:
    """spans() lists span ids newest first, with counts and each one's last name."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add(
            [series([sample(["f"], 2, [("span_id", A), ("span_name", "GET /a")])])],
            received_at=100.0,
        )
        store.add(
            [
                series(
                    [
                        sample(["g"], 1, [("span_id", B), ("span_id", C), ("span_name", "GET /b")]),
                        sample(["g"], 4, [("span_id", C)]),
                        sample(["h"], 1, [("span_id", B), ("span_name", "GET /x")]),
                        sample(["h"], 2, [("span_id", B), ("span_name", "GET /b")]),
                    ]
                )
            ],
            received_at=200.0,
        )
        assert reader.spans()[0] == SpanStat(
            span_id=C,
            service="svc",
            span_name="GET /b",
            sample_count=5,
            nanos=5 * PERIOD,
            first_seen=200.0,
            last_seen=200.0,
        )
        assert listed(reader.spans()) == [
            (C, "GET /b", 5, 200.0),
            (B, "GET /b", 4, 200.0),
            (A, "GET /a", 2, 100.0),
        ]
        assert [s.span_id for s in reader.spans(limit=1)] == [C]
        assert [s.span_id for s in reader.spans(Selection(until=150.0))] == [A]
        assert [s.span_id for s in reader.spans(Selection(since=150.0))] == [C, B]


def test_a_renamed_span_is_listed_once_under_its_last_name(db_path: Path) -> None:
    """A span whose early samples carry a bare method is listed once, under its newest name.

    The newest upload's name wins even when the older name has more samples.
    """
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add(
            [series([sample(["open_session"], 9, [("span_id", A), ("span_name", "GET")])])],
            received_at=100.0,
        )
        store.add(
            [series([sample(["view"], 2, [("span_id", A), ("span_name", "GET /items/{id}")])])],
            received_at=110.0,
        )
        assert listed(reader.spans()) == [(A, "GET /items/{id}", 11, 110.0)]


def test_span_without_name(db_path: Path) -> None:
    """A span id never seen next to a span_name has span_name None."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series([sample(["f"], 1, [("span_id", A)])])])
        assert listed(reader.spans()) == [(A, None, 1, reader.spans()[0].last_seen)]


def test_service_and_time_filters(db_path: Path) -> None:
    """service, since and until restrict samples, top and spans alike."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series([sample(["old"], 1, [("span_id", A)])], service="one")], received_at=10.0)
        store.add([series([sample(["new"], 1, [("span_id", B)])], service="two")], received_at=20.0)
        assert [s.functions[0] for s in reader.samples(Selection(service="two"))] == ["new"]
        assert [s.functions[0] for s in reader.samples(Selection(since=15.0))] == ["new"]
        assert [s.functions[0] for s in reader.samples(Selection(until=15.0))] == ["old"]
        assert [s.name for s in reader.top(Selection(service="one"))] == ["old"]
        assert [s.span_id for s in reader.spans(Selection(service="one"))] == [A]
        assert reader.services() == ["one", "two"]


def test_many_samples_iterate_in_batches(db_path: Path) -> None:
    """samples() returns every row in order even beyond one fetch batch."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series([sample([f"f{i}"]) for i in range(1234)])])
        names = [s.functions[0] for s in reader.samples()]
    assert names == [f"f{i}" for i in range(1234)]


def test_wal_mode_allows_reader_during_write(db_path: Path) -> None:
    """The database is in WAL mode, so a reader reads while a write is open, without waiting."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["f"])])])
        writer = sqlite3.connect(db_path, isolation_level=None)
        try:
            assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("DELETE FROM sample_labels")
            with ProfileReader(db_path, timeout=0.5) as reader:
                assert len(list(reader.samples())) == 1
            writer.execute("ROLLBACK")
        finally:
            writer.close()


def test_reader_refuses_what_is_not_a_profile_database(tmp_path: Path) -> None:
    """A reader of a missing file or of another database raises sqlite3 errors naming it."""
    with pytest.raises(sqlite3.OperationalError, match="no database"):
        ProfileReader(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(sqlite3.DatabaseError, match="schema version None"):
        ProfileReader(other)


@pytest.mark.e2e
def test_query_api_does_not_import_protobuf() -> None:
    """Importing the writer, the read API and the command leaves protobuf unimported."""
    code = (
        "import sys, span_profiles.receiver as r, span_profiles.cli; r.ProfileStore; r.ProfileReader;"
        " assert not [m for m in sys.modules if m.startswith('google')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env_with_src())


def _env_with_src() -> dict[str, str]:
    import os

    src = str(ROOT / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _two_name_store(db_path: Path) -> None:
    with ProfileStore(db_path) as store:
        store.add(
            [
                series(
                    [
                        sample(
                            ["f", "main"],
                            2,
                            [("span_id", A), ("span_name", "x"), ("span_name", "y")],
                        ),
                        sample(["g", "main"], 3, [("span_id", A), ("span_name", "y")]),
                        sample(["h"], 4, [("span_id", B)]),
                        sample(["k"], 5, [("span_name", "x")]),
                    ],
                    service="one",
                )
            ],
            received_at=10.0,
        )
        store.add(
            [series([sample(["f", "main"], 1, [("span_id", A)])], service="two")],
            received_at=20.0,
        )


SELECTIONS = (
    Selection(),
    Selection(span_ids=(A,)),
    Selection(span_names=("y",)),
    Selection(span_ids=(B,), span_names=("x",)),
    Selection(span_names=("x", "y")),
    Selection(span_names=("y",), exclude_span_ids=(A,)),
    Selection(exclude_span_ids=(A,)),
    Selection(service="one", until=15.0),
    Selection(since=15.0),
    Selection(profile_type="wall"),
)


@pytest.mark.parametrize("where", SELECTIONS, ids=lambda where: where.describe())
def test_rollups_agree_with_the_samples(db_path: Path, where: Selection) -> None:
    """For every kind of selection, the stack counts and totals read from the rollups equal what
    counting the selected samples gives."""
    _two_name_store(db_path)
    with ProfileReader(db_path) as reader:
        expected: dict[tuple[str, ...], int] = {}
        for got in reader.samples(where):
            expected[got.functions] = expected.get(got.functions, 0) + got.count
        assert {s.functions: s.count for s in reader.stack_counts(where)} == expected
        assert reader.total_count(where) == sum(expected.values())
        assert reader.has_samples(where) == bool(expected)


def test_several_span_names_count_once(db_path: Path) -> None:
    """A sample with two span_name labels counts once in totals and once under each name."""
    _two_name_store(db_path)
    with ProfileReader(db_path) as reader:
        assert reader.total_count() == 2 + 3 + 4 + 5 + 1
        assert reader.total_count(Selection(span_ids=(A,))) == 6
        assert reader.total_count(Selection(span_names=("x",))) == 2 + 5
        assert reader.total_count(Selection(span_names=("y",))) == 2 + 3
        assert top(reader.top(Selection(span_names=("y",)))) == [
            ("g", 3, 3),
            ("f", 2, 2),
            ("main", 0, 5),
        ]
        # A is in two services: one row each, named after what each carried last.
        assert [(s.span_id, s.service, s.span_name, s.sample_count) for s in reader.spans()] == [
            (A, "two", None, 1),
            (A, "one", "y", 5),
            (B, "one", None, 4),
        ]
        assert listed(reader.spans(Selection(span_names=("x",)))) == [(A, "x", 2, 10.0)]
        assert listed(reader.spans(Selection(service="one", span_names=("x", "y")))) == [
            (A, "y", 7, 10.0)
        ]


def test_hourly_rollup_matches_the_samples(db_path: Path) -> None:
    """Windows over whole and partial hours give the same stacks as counting the samples."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        for number in range(12):
            when = 3600.0 * 100 + number * 1500.0
            store.add(
                [
                    series(
                        [
                            sample([f"f{number % 3}", "main"], number + 1, [("span_name", "x")]),
                            sample(["g", "main"], 2, [("span_name", "y")]),
                        ],
                        service="one" if number % 2 else "two",
                    )
                ],
                received_at=when,
            )
        start = 3600.0 * 100
        for since, until in [
            (None, None),
            (start + 1000, None),
            (None, start + 9000),
            (start + 1000, start + 9000),
            (start + 1500, start + 1600),
            (start, start + 3600),
            (start - 10, start + 20000),
        ]:
            for where in (
                Selection(since=since, until=until),
                Selection(since=since, until=until, span_names=("x",)),
                Selection(since=since, until=until, service="one"),
            ):
                assert _stacks(reader, where) == _counted(reader, where), where
                assert reader.total_count(where) == sum(_counted(reader, where).values())
        # Retention keeps the rollup in step with what is left.
        store.retention = replace(store.retention, max_age=3600.0 * 2, max_bytes=None)
        store.enforce_retention(now=start + 16500 + 3600)
        assert _counted(reader, Selection())
        assert _stacks(reader, Selection()) == _counted(reader, Selection())


def _stacks(reader: ProfileReader, where: Selection) -> dict[tuple[str, ...], int]:
    return {s.functions: s.count for s in reader.stack_counts(where)}


def _counted(reader: ProfileReader, where: Selection) -> dict[tuple[str, ...], int]:
    counted: dict[tuple[str, ...], int] = {}
    for got in reader.samples(where):
        counted[got.functions] = counted.get(got.functions, 0) + got.count
    return counted


def _span_totals(reader: ProfileReader, where: Selection) -> dict[tuple[str, str], tuple[int, int]]:
    """Per span and service: (samples, nanoseconds) counted from the samples, each once."""
    counted: dict[tuple[str, str], tuple[int, int]] = {}
    for got in reader.samples(where):
        for span_id in dict.fromkeys(got.label_values("span_id")):
            count, nanos = counted.get((span_id, got.service), (0, 0))
            counted[span_id, got.service] = (count + got.count, nanos + got.nanos)
    return counted


def test_span_rollups_match_the_samples_in_any_window(db_path: Path) -> None:
    """Spans that cross a window's edges are counted inside it only, spans inside it whole, and
    retention keeps the per-span rollups equal to what is left."""
    start = 3600.0 * 200
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        for number in range(10):
            labels = [("span_id", f"{number // 3:016x}"), ("span_name", f"GET /{number % 2}")]
            store.add(
                [series([sample(["f", "main"], number + 1, labels)], service="one")],
                received_at=start + number * 1000.0,
            )
        windows = [
            (None, None),
            (start + 500, None),
            (None, start + 4500),
            (start + 2500, start + 6500),
        ]
        for since, until in windows:
            where = Selection(since=since, until=until)
            got = {
                (s.span_id, s.service): (s.sample_count, s.nanos)
                for s in reader.spans(where, limit=None)
            }
            assert got == _span_totals(reader, where), where
            by_nanos = reader.spans(where, limit=None, order="nanos")
            assert [s.nanos for s in by_nanos] == sorted((s.nanos for s in by_nanos), reverse=True)
        store.retention = replace(store.retention, max_age=4500.0, max_bytes=None)
        assert store.enforce_retention(now=start + 9000.0) == 5
        got = {(s.span_id, s.service): (s.sample_count, s.nanos) for s in reader.spans(limit=None)}
        assert got == _span_totals(reader, Selection())
        assert [s.first_seen for s in reader.spans(Selection(span_ids=(f"{1:016x}",)))] == [
            start + 5000.0
        ]
