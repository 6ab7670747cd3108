"""The writer (ProfileStore) and the read API (ProfileReader, Selection); no protobuf needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from span_profiles.receiver import (
    FunctionStat,
    ProfileReader,
    ProfileStore,
    Selection,
    SpanStat,
    StoredSample,
    default_db_path,
)
from span_profiles.receiver.model import Profile, Sample, Series
from span_profiles.receiver.storage import rollups
from tests.receiver.helpers import CPU, PERIOD, sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"


def top(stats: list[FunctionStat]) -> list[tuple[str, int, int]]:
    """``(name, self, total)`` of each function, in order."""
    return [(s.name, s.self_count, s.total_count) for s in stats]


def listed(stats: list[SpanStat]) -> list[tuple[str, str | None, int, float]]:
    """``(span_id, span_name, samples, last seen)`` of each span, in order."""
    return [(s.span_id, s.span_name, s.sample_count, s.last_seen) for s in stats]


def test_samples_round_trip(db_path: Path) -> None:
    """A stored sample comes back with its labels (duplicates in order), stack, count and context."""
    labels = [("span_id", B), ("span_name", "GET /a"), ("span_id", A)]
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        assert (
            store.add([series([sample(["leaf", "mid", "root"], 3, labels)])], received_at=5.0) == 1
        )
        (got,) = reader.samples()
    assert got == StoredSample(
        labels=tuple(labels),
        functions=("leaf", "mid", "root"),
        files=("/srv/leaf.py", "/srv/mid.py", "/srv/root.py"),
        count=3,
        service="svc",
        received_at=5.0,
        value=3 * PERIOD,
        series_labels=(("__name__", "process_cpu"), ("service_name", "svc")),
        nanos=3 * PERIOD,
        period=PERIOD,
        profile_type="cpu",
    )
    assert got.label_values("span_id") == (B, A)


def test_legacy_profile_id_becomes_span_id(db_path: Path) -> None:
    """The legacy profile_id sample label is stored and queried as span_id, as Pyroscope does."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series([sample(["f"], 1, [("profile_id", A)])])])
        assert next(reader.samples()).labels == (("span_id", A),)
        assert reader.top(Selection(span_ids=(A,))) == [FunctionStat("f", 1, 1, PERIOD)]


def test_zero_values_skipped_and_counts_rounded(db_path: Path) -> None:
    """Zero-value samples are not stored; counts are value/period rounded, at least one."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        one = Sample(values=(0,), functions=("zero",), files=("",), labels=())
        frac = Sample(values=(PERIOD // 10,), functions=("tiny",), files=("",), labels=())
        many = Sample(
            values=(5 * PERIOD + PERIOD // 2,), functions=("big",), files=("",), labels=()
        )
        assert store.add([series([one, frac, many])]) == 2
        assert [(s.functions[0], s.count) for s in reader.samples()] == [("tiny", 1), ("big", 6)]


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
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([Series(labels=(("service_name", "x"),), profiles=(profile,))])
        assert [(s.count, s.value) for s in reader.samples()] == [(2, 2 * PERIOD)]


def test_missing_service_name_is_unknown_service(db_path: Path) -> None:
    """A series without service_name is stored under unknown_service."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([Series(labels=(), profiles=series([sample(["f"])]).profiles)])
        assert reader.services() == ["unknown_service"]


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


def test_add_is_atomic(db_path: Path) -> None:
    """If storing fails half-way, the whole batch is rolled back."""
    broken = Sample(values=(PERIOD,), functions=(object(),), files=("",), labels=())  # type: ignore[arg-type]
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        with pytest.raises(TypeError):
            store.add([series([sample(["fine"])]), series([broken])])
        assert list(reader.samples()) == []
        store.add([series([sample(["fine"])])])
        assert len(list(reader.samples())) == 1


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


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default database follows XDG_DATA_HOME and ignores a relative value."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "span-profiles" / "profiles.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local/share/span-profiles/profiles.db"


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

    src = str(Path(__file__).resolve().parents[2] / "src")
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


_UPLOAD = st.lists(
    st.tuples(
        st.sampled_from([A, B, C, None]),
        st.lists(st.sampled_from(["GET", "GET /a", "GET /b"]), max_size=2),
        st.integers(1, 5),
        st.sampled_from(["one", "two"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(uploads=st.lists(st.tuples(_UPLOAD, st.sampled_from([10.0, 20.0, 20.0, 30.0])), max_size=6))
def test_rollups_written_at_ingest_equal_a_rebuild(
    tmp_path_factory: pytest.TempPathFactory,
    uploads: list[tuple[list[tuple[str | None, list[str], int, str]], float]],
) -> None:
    """Whatever arrives (renames, several names on a sample, equal arrival times, several
    services), the rollups the writer keeps up to date equal those rebuilt from scratch."""
    path = tmp_path_factory.mktemp("rollups") / "p.db"
    with ProfileStore(path) as store:
        for upload, when in uploads:
            by_service: dict[str, list[Sample]] = {}
            for span_id, names, count, service in upload:
                labels = [("span_id", span_id)] if span_id else []
                labels += [("span_name", name) for name in names]
                by_service.setdefault(service, []).append(sample(["f", "main"], count, labels))
            store.add([series(s, service=svc) for svc, s in by_service.items()], received_at=when)
        tables = ("span_totals", "span_names", "name_stacks_hourly")
        written = {t: sorted(store._db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        store._db.execute("BEGIN")
        rollups.rebuild_all(store._db.cursor())
        rebuilt = {t: sorted(store._db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        store._db.execute("ROLLBACK")
    assert written == rebuilt
