"""The SQLite store and its query API; no protobuf needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from span_profiles.receiver.model import Profile, Sample, Series
from span_profiles.receiver.storage.writer import (
    Filter,
    FunctionStat,
    ProfileStore,
    SpanStat,
    StoredSample,
    default_db_path,
)
from tests.receiver.helpers import CPU, PERIOD, sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"


def test_samples_round_trip(db_path: Path) -> None:
    """A stored sample comes back with its labels (duplicates in order), stack, count and context."""
    labels = [("span_id", B), ("span_name", "GET /a"), ("span_id", A)]
    with ProfileStore(db_path) as store:
        assert (
            store.add([series([sample(["leaf", "mid", "root"], 3, labels)])], received_at=5.0) == 1
        )
        (got,) = store.samples()
    assert got == StoredSample(
        labels=tuple(labels),
        functions=("leaf", "mid", "root"),
        files=("/srv/leaf.py", "/srv/mid.py", "/srv/root.py"),
        count=3,
        service="svc",
        received_at=5.0,
        value=3 * PERIOD,
        series_labels=(("__name__", "process_cpu"), ("service_name", "svc")),
    )
    assert got.label_values("span_id") == (B, A)


def test_legacy_profile_id_becomes_span_id(db_path: Path) -> None:
    """The legacy profile_id sample label is stored and queried as span_id, as Pyroscope does."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["f"], 1, [("profile_id", A)])])])
        assert next(store.samples()).labels == (("span_id", A),)
        assert store.top(span_id=A) == [FunctionStat("f", 1, 1)]


def test_zero_values_skipped_and_counts_rounded(db_path: Path) -> None:
    """Zero-value samples are not stored; counts are value/period rounded, at least one."""
    with ProfileStore(db_path) as store:
        one = Sample(values=(0,), functions=("zero",), files=("",), labels=())
        frac = Sample(values=(PERIOD // 10,), functions=("tiny",), files=("",), labels=())
        many = Sample(
            values=(5 * PERIOD + PERIOD // 2,), functions=("big",), files=("",), labels=()
        )
        assert store.add([series([one, frac, many])]) == 2
        assert [(s.functions[0], s.count) for s in store.samples()] == [("tiny", 1), ("big", 6)]


def test_value_column_follows_period_type(db_path: Path) -> None:
    """With several sample types, the column matching the period type is stored."""
    profile = Profile(
        sample_types=(("samples", "count"), CPU),
        period_type=CPU,
        period=PERIOD,
        time_nanos=0,
        duration_nanos=0,
        samples=(Sample(values=(7, 2 * PERIOD), functions=("f",), files=("",), labels=()),),
    )
    with ProfileStore(db_path) as store:
        store.add([Series(labels=(("service_name", "x"),), profiles=(profile,))])
        assert [(s.count, s.value) for s in store.samples()] == [(2, 2 * PERIOD)]


def test_missing_service_name_is_unknown_service(db_path: Path) -> None:
    """A series without service_name is stored under unknown_service."""
    with ProfileStore(db_path) as store:
        store.add([Series(labels=(), profiles=series([sample(["f"])]).profiles)])
        assert store.services() == ["unknown_service"]


def test_top_self_total_and_recursion(db_path: Path) -> None:
    """top() counts self at the leaf, total once per sample even for recursion, sorted self then total."""
    samples = [
        sample(["fib", "fib", "fib", "main"], 4),
        sample(["work", "fib", "main"], 2),
        sample(["main"], 1),
        sample(["io", "main"], 4),
    ]
    with ProfileStore(db_path) as store:
        store.add([series(samples)])
        assert store.top() == [
            FunctionStat("fib", 4, 6),
            FunctionStat("io", 4, 4),
            FunctionStat("work", 2, 2),
            FunctionStat("main", 1, 11),
        ]
        assert store.top(limit=2) == store.top()[:2]
        assert store.total_count() == 11


def test_span_filters_match_each_of_several_span_ids(db_path: Path) -> None:
    """A sample carrying several span ids matches a filter on each of them."""
    samples = [
        sample(["a"], 2, [("span_id", A), ("span_name", "GET /a")]),
        sample(["shared"], 5, [("span_id", A), ("span_id", B)]),
        sample(["b"], 3, [("span_id", B), ("span_name", "GET /b")]),
        sample(["none"], 7),
    ]
    with ProfileStore(db_path) as store:
        store.add([series(samples)])
        assert [s.name for s in store.top(span_id=A)] == ["shared", "a"]
        assert [s.name for s in store.top(span_id=B)] == ["shared", "b"]
        assert store.top(span_id=C) == []
        assert store.top(span_name="GET /b") == [FunctionStat("b", 3, 3)]
        assert store.total_count(span_id=A) == 7
        assert [s.functions for s in store.samples(span_id=B)] == [("shared",), ("b",)]


def test_spans_most_recent_first_with_names(db_path: Path) -> None:
    """spans() lists span ids newest first, with counts and the span_name seen most with each."""
    with ProfileStore(db_path) as store:
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
        assert store.spans() == [
            SpanStat(span_id=C, span_name="GET /b", sample_count=5, last_seen=200.0),
            SpanStat(span_id=B, span_name="GET /b", sample_count=4, last_seen=200.0),
            SpanStat(span_id=A, span_name="GET /a", sample_count=2, last_seen=100.0),
        ]
        assert [s.span_id for s in store.spans(limit=1)] == [C]
        assert [s.span_id for s in store.spans(until=150.0)] == [A]
        assert [s.span_id for s in store.spans(since=150.0)] == [C, B]


def test_a_renamed_span_is_listed_once_under_its_last_name(db_path: Path) -> None:
    """A span whose early samples carry a bare method is listed once, under its newest name.

    The newest upload's name wins even when the older name has more samples.
    """
    with ProfileStore(db_path) as store:
        store.add(
            [series([sample(["open_session"], 9, [("span_id", A), ("span_name", "GET")])])],
            received_at=100.0,
        )
        store.add(
            [series([sample(["view"], 2, [("span_id", A), ("span_name", "GET /items/{id}")])])],
            received_at=110.0,
        )
        assert store.spans() == [
            SpanStat(span_id=A, span_name="GET /items/{id}", sample_count=11, last_seen=110.0)
        ]


def test_span_without_name(db_path: Path) -> None:
    """A span id never seen next to a span_name has span_name None."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["f"], 1, [("span_id", A)])])])
        assert store.spans() == [SpanStat(A, None, 1, store.spans()[0].last_seen)]


def test_service_and_time_filters(db_path: Path) -> None:
    """service, since and until restrict samples, top and spans alike."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["old"], 1, [("span_id", A)])], service="one")], received_at=10.0)
        store.add([series([sample(["new"], 1, [("span_id", B)])], service="two")], received_at=20.0)
        assert [s.functions[0] for s in store.samples(service="two")] == ["new"]
        assert [s.functions[0] for s in store.samples(since=15.0)] == ["new"]
        assert [s.functions[0] for s in store.samples(until=15.0)] == ["old"]
        assert [s.name for s in store.top(service="one")] == ["old"]
        assert [s.span_id for s in store.spans(service="one")] == [A]
        assert store.services() == ["one", "two"]


def test_add_is_atomic(db_path: Path) -> None:
    """If storing fails half-way, the whole batch is rolled back."""
    broken = Sample(values=(PERIOD,), functions=(object(),), files=("",), labels=())  # type: ignore[arg-type]
    with ProfileStore(db_path) as store:
        with pytest.raises(TypeError):
            store.add([series([sample(["fine"])]), series([broken])])
        assert list(store.samples()) == []
        store.add([series([sample(["fine"])])])
        assert len(list(store.samples())) == 1


def test_many_samples_iterate_in_batches(db_path: Path) -> None:
    """samples() returns every row in order even beyond one fetch batch."""
    with ProfileStore(db_path) as store:
        store.add([series([sample([f"f{i}"]) for i in range(1234)])])
        names = [s.functions[0] for s in store.samples()]
    assert names == [f"f{i}" for i in range(1234)]


def test_wal_mode_allows_reader_during_write(db_path: Path) -> None:
    """The database is in WAL mode, so a second connection reads while a write is open."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["f"])])])
        writer = sqlite3.connect(db_path, isolation_level=None)
        try:
            assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("DELETE FROM sample_labels")
            with ProfileStore(db_path, timeout=0.5) as reader:
                assert len(list(reader.samples())) == 1
            writer.execute("ROLLBACK")
        finally:
            writer.close()


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default database follows XDG_DATA_HOME and ignores a relative value."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "span-profiles" / "profiles.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local/share/span-profiles/profiles.db"


@pytest.mark.e2e
def test_query_api_does_not_import_protobuf() -> None:
    """Importing the store and the package's query API leaves protobuf unimported."""
    code = (
        "import sys, span_profiles.receiver as r, span_profiles.receiver.storage.writer, "
        "span_profiles.cli; r.ProfileStore; "
        "assert not [m for m in sys.modules if m.startswith('google')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env_with_src())


def _env_with_src() -> dict[str, str]:
    import os

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _two_name_store(db_path: Path) -> ProfileStore:
    store = ProfileStore(db_path)
    store.add(
        [
            series(
                [
                    sample(
                        ["f", "main"], 2, [("span_id", A), ("span_name", "x"), ("span_name", "y")]
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
        [series([sample(["f", "main"], 1, [("span_id", A)])], service="two")], received_at=20.0
    )
    return store


def test_filter_is_the_same_as_keywords(db_path: Path) -> None:
    """A Filter and the keyword arguments select the same samples in every query."""
    with _two_name_store(db_path) as store:
        for where in (
            Filter(),
            Filter(span_id=A),
            Filter(span_name="y"),
            Filter(span_id=A, span_name="x"),
            Filter(service="one", until=15.0),
            Filter(since=15.0),
        ):
            fields = {k: v for k, v in where.__dict__.items() if v is not None}
            assert store.top(where) == store.top(**fields)
            assert store.total_count(where) == store.total_count(**fields)
            assert store.spans(where) == store.spans(**fields)
            assert list(store.samples(where)) == list(store.samples(**fields))
            # The aggregate tables agree with the samples themselves.
            assert store.total_count(where) == sum(s.count for s in store.samples(where))


def test_several_span_names_count_once(db_path: Path) -> None:
    """A sample with two span_name labels counts once in totals and once under each name."""
    with _two_name_store(db_path) as store:
        assert store.total_count() == 2 + 3 + 4 + 5 + 1
        assert store.total_count(span_id=A) == 6
        assert store.total_count(span_name="x") == 2 + 5
        assert store.total_count(span_name="y") == 2 + 3
        assert store.top(span_name="y") == [
            FunctionStat("g", 3, 3),
            FunctionStat("f", 2, 2),
            FunctionStat("main", 0, 5),
        ]
        assert store.spans() == [SpanStat(A, "y", 6, 20.0), SpanStat(B, None, 4, 10.0)]
        assert store.spans(span_name="x") == [SpanStat(A, "y", 6, 20.0)]


def test_version_1_database_is_upgraded(db_path: Path) -> None:
    """A database of schema version 1 gets the aggregate tables filled from its samples."""
    with _two_name_store(db_path) as store:
        expected = (
            store.spans(),
            store.top(),
            store.top(span_name="x"),
            store.total_count(span_id=A),
        )
    raw = sqlite3.connect(db_path)
    raw.executescript(
        "DROP TABLE span_stats; DROP TABLE name_stacks; DROP TABLE name_stacks_hourly;"
        " UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    raw.close()
    with pytest.raises(sqlite3.DatabaseError, match="schema version '1'"):
        ProfileStore(db_path, read_only=True)
    with ProfileStore(db_path) as store:
        got = (store.spans(), store.top(), store.top(span_name="x"), store.total_count(span_id=A))
    assert got == expected


def test_hourly_rollup_matches_the_samples(db_path: Path) -> None:
    """Windows over whole and partial hours give the same stacks as counting the samples."""
    with ProfileStore(db_path) as store:
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
                Filter(since=since, until=until),
                Filter(since=since, until=until, span_name="x"),
                Filter(since=since, until=until, service="one"),
            ):
                expected: dict[tuple[str, ...], int] = {}
                for got in store.samples(where):
                    expected[got.functions] = expected.get(got.functions, 0) + got.count
                assert dict(store.stack_counts(where)) == expected, where
                assert store.total_count(where) == sum(expected.values())
        # Retention keeps the rollup in step with what is left.
        store.retention = replace(store.retention, max_age=3600.0 * 2, max_bytes=None)
        store.enforce_retention(now=start + 16500 + 3600)
        where = Filter()
        expected = {}
        for got in store.samples(where):
            expected[got.functions] = expected.get(got.functions, 0) + got.count
        assert expected
        assert dict(store.stack_counts(where)) == expected
