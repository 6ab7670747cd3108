"""The SQLite store and its query API; no protobuf needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from span_profiles.receiver.model import Profile, Sample, Series
from span_profiles.receiver.store import (
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
        "import sys, span_profiles.receiver as r, span_profiles.receiver.store, "
        "span_profiles.receiver.cli; r.ProfileStore; "
        "assert not [m for m in sys.modules if m.startswith('google')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env_with_src())


def _env_with_src() -> dict[str, str]:
    import os

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env
