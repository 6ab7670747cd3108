"""The writer (ProfileStore): what a stored upload becomes, in one transaction, with its rollups."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from span_profiles.receiver import (
    FunctionStat,
    ProfileReader,
    ProfileStore,
    Selection,
    StoredSample,
    default_db_path,
)
from span_profiles.receiver.model import Profile, Sample, Series
from span_profiles.receiver.storage import rollups
from tests.support.receiver import CPU, PERIOD, sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"


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


def test_add_is_atomic(db_path: Path) -> None:
    """If storing fails half-way, the whole batch is rolled back."""
    broken = Sample(values=(PERIOD,), functions=(object(),), files=("",), labels=())  # type: ignore[arg-type]
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        with pytest.raises(TypeError):
            store.add([series([sample(["fine"])]), series([broken])])
        assert list(reader.samples()) == []
        store.add([series([sample(["fine"])])])
        assert len(list(reader.samples())) == 1


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default database follows XDG_DATA_HOME and ignores a relative value."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "span-profiles" / "profiles.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local/share/span-profiles/profiles.db"


_UPLOAD = st.lists(
    st.tuples(
        st.sampled_from([A, B, C, None]),
        st.lists(st.sampled_from(["GET", "GET /a", "GET /b"]), max_size=2),
        st.integers(1, 5),
        st.sampled_from(["one", "two"]),
        st.sampled_from(["process_cpu", "wall"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(uploads=st.lists(st.tuples(_UPLOAD, st.sampled_from([10.0, 20.0, 20.0, 30.0])), max_size=6))
def test_rollups_written_at_ingest_equal_a_rebuild(
    tmp_path_factory: pytest.TempPathFactory,
    uploads: list[tuple[list[tuple[str | None, list[str], int, str, str]], float]],
) -> None:
    """Whatever arrives (renames, several names on a sample, equal arrival times, several
    services, CPU and wall series in one push, the same span in both), the rollups the writer
    keeps up to date equal those rebuilt from scratch."""
    path = tmp_path_factory.mktemp("rollups") / "p.db"
    with ProfileStore(path) as store:
        for upload, when in uploads:
            by_series: dict[tuple[str, str], list[Sample]] = {}
            for span_id, names, count, service, kind in upload:
                labels = [("span_id", span_id)] if span_id else []
                labels += [("span_name", name) for name in names]
                by_series.setdefault((service, kind), []).append(
                    sample(["f", "main"], count, labels)
                )
            store.add(
                [series(s, service=svc, name=kind) for (svc, kind), s in by_series.items()],
                received_at=when,
            )
        tables = ("span_totals", "span_names", "name_stacks_hourly")
        written = {t: sorted(store._db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        store._db.execute("BEGIN")
        rollups.rebuild_all(store._db.cursor())
        rebuilt = {t: sorted(store._db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        store._db.execute("ROLLBACK")
    assert written == rebuilt
