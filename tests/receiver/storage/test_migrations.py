"""Databases written by older versions are migrated to the current schema when opened for writing.

Each old database is built with the schema that version shipped (below, copied from it) and
filled with the rows a current store holds, as that version wrote them; after the migration every
query answers as on a database written by the current version.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from span_profiles.receiver import ProfileReader, ProfileStore, Selection
from span_profiles.receiver.query import documents
from span_profiles.receiver.storage.schema import SCHEMA_VERSION
from tests.support.receiver import sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"

# The tables of versions 1 to 3 (version 1: the first five; version 2 added span_stats and
# name_stacks; version 3 name_stacks_hourly). Indexes are left out: queries only need tables.
_OLD_TABLES = {
    "profiles": """CREATE TABLE profiles (id INTEGER PRIMARY KEY, service TEXT NOT NULL,
        received_at REAL NOT NULL, series_labels TEXT NOT NULL, sample_type TEXT NOT NULL,
        sample_unit TEXT NOT NULL, period_type TEXT NOT NULL, period_unit TEXT NOT NULL,
        period INTEGER NOT NULL, time_nanos INTEGER NOT NULL, duration_nanos INTEGER NOT NULL)""",
    "stacks": """CREATE TABLE stacks (id INTEGER PRIMARY KEY, functions TEXT NOT NULL,
        files TEXT NOT NULL, UNIQUE (functions, files))""",
    "samples": """CREATE TABLE samples (id INTEGER PRIMARY KEY, profile_id INTEGER NOT NULL,
        stack_id INTEGER NOT NULL, count INTEGER NOT NULL, value INTEGER NOT NULL,
        labels TEXT NOT NULL)""",
    "sample_labels": """CREATE TABLE sample_labels (sample_id INTEGER NOT NULL,
        key TEXT NOT NULL, value TEXT NOT NULL)""",
    "span_stats": """CREATE TABLE span_stats (profile_id INTEGER NOT NULL, span_id TEXT NOT NULL,
        span_name TEXT NOT NULL, first INTEGER NOT NULL, count INTEGER NOT NULL)""",
    "name_stacks": """CREATE TABLE name_stacks (profile_id INTEGER NOT NULL,
        span_name TEXT NOT NULL, stack_id INTEGER NOT NULL, first INTEGER NOT NULL,
        count INTEGER NOT NULL)""",
    "name_stacks_hourly": """CREATE TABLE name_stacks_hourly (span_name TEXT NOT NULL,
        hour INTEGER NOT NULL, service TEXT NOT NULL, stack_id INTEGER NOT NULL,
        first INTEGER NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (span_name, hour, service, stack_id, first)) WITHOUT ROWID""",
}
_VERSION_TABLES = {"1": 4, "2": 6, "3": 7}
_COPY = {
    "profiles": "id, service, received_at, series_labels, sample_type, sample_unit, period_type,"
    " period_unit, period, time_nanos, duration_nanos",
    "stacks": "id, functions, files",
    "samples": "id, profile_id, stack_id, count, value, labels",
    "sample_labels": "sample_id, key, value",
    "span_stats": "profile_id, span_id, span_name, first, count",
    "name_stacks": "profile_id, span_name, stack_id, first, count",
}


def _fill(path: Path) -> None:
    """CPU uploads over three hours (a span renamed, a sample of two names) and a wall upload."""
    start = 3600.0 * 300
    with ProfileStore(path) as store:
        store.add(
            [series([sample(["open", "main"], 9, [("span_id", A), ("span_name", "GET")])])],
            received_at=start + 100,
        )
        store.add(
            [
                series(
                    [
                        sample(["view", "main"], 2, [("span_id", A), ("span_name", "GET /a")]),
                        sample(["g", "main"], 3, [("span_id", B), ("span_name", "GET /a")]),
                        sample(
                            ["both", "main"],
                            4,
                            [("span_id", C), ("span_name", "GET /b"), ("span_name", "GET /c")],
                        ),
                        sample(["idle", "loop"], 5),
                    ],
                    service="other",
                ),
                series([sample(["view", "main"], 1, [("span_id", B)])]),
            ],
            received_at=start + 4000,
        )
        store.add(
            [series([sample(["sleep", "main"], 7, [("span_id", C)])], name="wall")],
            received_at=start + 8000,
        )


def _old_database(current: Path, old: Path, version: str) -> None:
    """``current``'s rows in a new database of the shape ``version`` had, at ``old``."""
    db = sqlite3.connect(old)
    db.execute("ATTACH DATABASE ? AS current", (str(current),))
    for table, ddl in list(_OLD_TABLES.items())[: _VERSION_TABLES[version]]:
        db.execute(ddl)
        if table == "name_stacks_hourly":
            db.execute(
                "INSERT INTO name_stacks_hourly SELECT ns.span_name,"
                " CAST(p.received_at / 3600 AS INTEGER), p.service, ns.stack_id, ns.first,"
                " SUM(ns.count) FROM current.name_stacks ns JOIN current.profiles p"
                " ON p.id = ns.profile_id GROUP BY 1, 2, 3, 4, 5"
            )
        else:
            columns = _COPY[table]
            db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM current.{table}")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    db.commit()
    db.execute("DETACH DATABASE current")
    db.close()


def _answers(path: Path) -> dict[str, Any]:
    """What the views answer, over every profile type."""
    with ProfileReader(path) as reader:
        answers: dict[str, Any] = {"types": reader.profile_types()}
        for kind in ("cpu", "wall"):
            where = Selection(profile_type=kind)
            answers[kind] = {
                "overview": documents.overview_json(reader, where),
                "spans": [s.to_json() for s in reader.spans(where, limit=None)],
                "top": reader.top(where, limit=None),
                "a": documents.span_json(reader, A, where) if kind == "cpu" else None,
                "name": documents.endpoint_json(reader, "GET /a", where),
                "window": documents.overview_json(
                    reader, Selection(since=3600.0 * 300 + 50, until=3600.0 * 301 + 500)
                ),
            }
    return answers


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_an_old_database_is_migrated(tmp_path: Path, version: str) -> None:
    """A database of schema version 1, 2 or 3 reads as one written now, once opened for writing,
    the wall upload typed from its series labels."""
    current = tmp_path / "current.db"
    _fill(current)
    expected = _answers(current)
    assert expected["types"] == ["cpu", "wall"]
    old = tmp_path / f"v{version}.db"
    _old_database(current, old, version)
    with pytest.raises(sqlite3.DatabaseError, match=f"schema version '{version}'"):
        ProfileReader(old)
    ProfileStore(old).close()
    raw = sqlite3.connect(old)
    try:
        assert raw.execute("SELECT value FROM meta").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()
    assert _answers(old) == expected


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    """A database of a schema version this code does not know is left alone, with a message."""
    path = tmp_path / "p.db"
    _fill(path)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer than this span-profiles"):
        ProfileStore(path)
