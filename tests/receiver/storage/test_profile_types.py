"""The profile type through storage: one push of both types, one span in both, the hourly rollups
and retention per type."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, ProfileStore, Retention, Selection
from span_profiles.receiver.model import Sample
from span_profiles.receiver.storage import rollups
from span_profiles.receiver.storage.schema import HOUR
from tests.support.receiver import PERIOD, sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
MS = 1_000_000
TABLES = ("span_totals", "span_names", "name_stacks_hourly")


def _wall(functions: list[str], nanos: int, span_id: str, name: str = "GET /a") -> Sample:
    """A wall sample of ``nanos`` nanoseconds (not a whole number of periods, in general)."""
    return Sample(
        values=(nanos,),
        functions=tuple(functions),
        files=tuple(f"/srv/{f}.py" for f in functions),
        labels=(("span_id", span_id), ("span_name", name)),
    )


def _cpu(functions: list[str], count: int, span_id: str, name: str = "GET /a") -> Sample:
    return sample(functions, count, [("span_id", span_id), ("span_name", name)])


def _by_stack(reader: ProfileReader, where: Selection) -> dict[tuple[str, ...], tuple[int, float]]:
    """Samples and nanoseconds per stack, summed from the stored samples themselves."""
    counts: Counter[tuple[str, ...]] = Counter()
    nanos: Counter[tuple[str, ...]] = Counter()
    for stored in reader.samples(where):
        counts[stored.functions] += stored.count
        nanos[stored.functions] += stored.nanos
    return {stack: (counts[stack], float(nanos[stack])) for stack in counts}


def _from_rollups(
    reader: ProfileReader, where: Selection
) -> dict[tuple[str, ...], tuple[int, float]]:
    return {s.functions: (s.count, s.nanos) for s in reader.stack_counts(where)}


def _rollups_equal_a_rebuild(store: ProfileStore) -> None:
    db = store._db
    written = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    db.execute("BEGIN")
    rollups.rebuild_all(db.cursor())
    rebuilt = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    db.execute("ROLLBACK")
    assert written == rebuilt


def test_one_push_of_both_types_keeps_each_span_once_per_type(db_path: Path) -> None:
    """A push with a CPU and a wall series of the same span: the span is listed once per type,
    each with its own samples and nanoseconds, and neither type's stacks leak into the other."""
    with ProfileStore(db_path) as store:
        stored = store.add(
            [
                series([_cpu(["burn", "main"], 3, A)], service="shop"),
                series(
                    [
                        _wall(["Pool.acquire", "main"], 312 * MS, A),
                        _wall(["burn", "main"], 30 * MS, A),
                    ],
                    service="shop",
                    name="wall",
                ),
            ],
            received_at=1_800_000_000.0,
        )
        assert stored == 3
        totals = store._db.execute(
            "SELECT profile_type, span_id, span_name, count, nanos FROM span_totals ORDER BY 1"
        ).fetchall()
    assert totals == [
        ("cpu", A, "GET /a", 3, 3.0 * PERIOD),
        ("wall", A, "GET /a", 31 + 3, 342.0 * MS),
    ]
    with ProfileReader(db_path) as reader:
        (cpu,) = reader.spans(Selection())
        (wall,) = reader.spans(Selection(profile_type="wall"))
        assert (cpu.span_id, cpu.sample_count, cpu.nanos) == (A, 3, 3.0 * PERIOD)
        assert (wall.span_id, wall.sample_count, wall.nanos) == (A, 34, 342.0 * MS)
        assert {s.functions for s in reader.stack_counts(Selection(span_ids=(A,)))} == {
            ("burn", "main")
        }
        wall_stacks = reader.stack_counts(Selection(span_names=("GET /a",), profile_type="wall"))
        assert {s.functions: s.nanos for s in wall_stacks} == {
            ("Pool.acquire", "main"): 312.0 * MS,
            ("burn", "main"): 30.0 * MS,
        }


def test_hourly_rollups_answer_each_type_as_its_samples_do(db_path: Path) -> None:
    """Over four hours of both types (the same stacks and names in each), every window, whole
    hours read from the hourly rollups and edges from the profiles, gives each type exactly the
    stacks its own samples give."""
    base = 1_800_000_000 // HOUR * HOUR
    with ProfileStore(db_path) as store:
        for hour in range(4):
            for minute in (5, 35):
                when = base + hour * HOUR + minute * 60.0
                span = A if minute == 5 else B
                store.add(
                    [
                        series([_cpu(["burn", "main"], hour + 1, span)]),
                        series(
                            [
                                _wall(["Pool.acquire", "main"], (hour + 1) * 17 * MS, span),
                                _wall(["burn", "main"], 10 * MS, span),
                            ],
                            name="wall",
                        ),
                    ],
                    received_at=when,
                )
        _rollups_equal_a_rebuild(store)
    windows = [
        (None, None),
        (base + HOUR, base + 3 * HOUR),  # whole hours only
        (base + 20 * 60, base + 2 * HOUR + 40 * 60),  # edges and whole hours
        (base + HOUR + 30 * 60, None),
    ]
    with ProfileReader(db_path) as reader:
        for since, until in windows:
            for kind in ("cpu", "wall"):
                for names in ((), ("GET /a",)):
                    where = Selection(since=since, until=until, span_names=names, profile_type=kind)
                    expected = _by_stack(reader, where)
                    assert expected, (since, until, kind)
                    assert _from_rollups(reader, where) == expected, (since, until, kind, names)
                    spans = {s.span_id: s.nanos for s in reader.spans(where, limit=None)}
                    for span_id, nanos in spans.items():
                        own = _by_stack(
                            reader,
                            Selection(
                                since=since, until=until, span_ids=(span_id,), profile_type=kind
                            ),
                        )
                        assert nanos == pytest.approx(sum(n for _, n in own.values()))


def test_retention_deletes_both_types_and_rebuilds_each(db_path: Path) -> None:
    """Retention ages out profiles of both types alike and rebuilds each type's rollups from what
    is left: the same span in both types keeps only its newer samples of each."""
    now = 1_800_000_000.0
    with ProfileStore(db_path, retention=Retention(max_age=3600, max_bytes=None)) as store:
        for age in (3 * HOUR, 2 * HOUR, 600.0):
            store.add(
                [
                    series([_cpu(["burn", "main"], 2, A)]),
                    series([_wall(["Pool.acquire", "main"], 125 * MS, A)], name="wall"),
                ],
                received_at=now - age,
            )
        store.add(
            [series([_wall(["sleep", "main"], 40 * MS, B)], name="wall")], received_at=now - 7200
        )
        assert store.enforce_retention(now) == 5
        _rollups_equal_a_rebuild(store)
    with ProfileReader(db_path) as reader:
        assert reader.profile_types() == ["cpu", "wall"]
        (cpu,) = reader.spans(Selection())
        (wall,) = reader.spans(Selection(profile_type="wall"))
        assert (cpu.sample_count, cpu.nanos) == (2, 2.0 * PERIOD)
        assert (wall.span_id, wall.sample_count, wall.nanos) == (A, 13, 125.0 * MS)
        assert _from_rollups(reader, Selection(profile_type="wall")) == {
            ("Pool.acquire", "main"): (13, 125.0 * MS)
        }
