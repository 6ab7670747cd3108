"""Bring a database of an older schema version to the current one, in one transaction.

What each version lacks:

* 1: every rollup (filled from the samples);
* 2: the hourly rollups;
* 3: the profile type, the rollups' nanoseconds and the per-span rollups; ``name_stacks_hourly``
  has the old shape (no profile type, no nanoseconds).

Version 4 added the profile type: older databases hold CPU profiles only (their ``__name__`` is
read again, so an upload of another type is typed right). Their per-profile rollups get
``count x period`` nanoseconds, what the views showed as CPU before; new uploads store each
sample's own value (:func:`~span_profiles.receiver.model.nanos_of`). The per-span and hourly
rollups are rebuilt from the per-profile rows. Migrating a store of 5 million samples takes under a minute
(``benchmarks/README.md``).
"""

from __future__ import annotations

import json
import sqlite3

from span_profiles.receiver.model import CPU, profile_type_of
from span_profiles.receiver.storage import rollups
from span_profiles.receiver.storage.schema import (
    SAMPLE_NANOS,
    SCHEMA,
    SCHEMA_VERSION,
    register_functions,
)

__all__ = ["migrate"]

# Fills the per-profile rollups of a version 1 database from its samples (first = 1 on the first
# name).
_BACKFILL = f"""
INSERT INTO span_stats (profile_id, span_id, span_name, first, count, nanos)
SELECT s.profile_id, l.value, COALESCE(n.value, ''),
       COALESCE(n.value = (SELECT MIN(m.value) FROM sample_labels m
                           WHERE m.sample_id = s.id AND m.key = 'span_name'), 1),
       SUM(s.count), TOTAL({SAMPLE_NANOS})
FROM sample_labels l JOIN samples s ON s.id = l.sample_id JOIN profiles p ON p.id = s.profile_id
LEFT JOIN sample_labels n ON n.sample_id = s.id AND n.key = 'span_name'
WHERE l.key = 'span_id' GROUP BY 1, 2, 3, 4;
INSERT INTO name_stacks (profile_id, span_name, stack_id, first, count, nanos)
SELECT s.profile_id, COALESCE(n.value, ''), s.stack_id,
       COALESCE(n.value = (SELECT MIN(m.value) FROM sample_labels m
                           WHERE m.sample_id = s.id AND m.key = 'span_name'), 1),
       SUM(s.count), TOTAL({SAMPLE_NANOS})
FROM samples s JOIN profiles p ON p.id = s.profile_id
LEFT JOIN sample_labels n ON n.sample_id = s.id AND n.key = 'span_name'
GROUP BY 1, 2, 3, 4;
"""

_PERIOD_NANOS = (
    "(SELECT CASE WHEN p.period_unit = 'nanoseconds' THEN p.period ELSE 0 END"
    " FROM profiles p WHERE p.id = {table}.profile_id)"
)


def _run(db: sqlite3.Connection, script: str) -> None:
    # executescript() would commit the open transaction; run the statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _type_profiles(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE profiles ADD COLUMN profile_type TEXT NOT NULL DEFAULT 'cpu'")
    rows = db.execute("SELECT id, series_labels FROM profiles").fetchall()
    typed = [
        (kind, profile_id)
        for profile_id, labels in rows
        if (kind := profile_type_of((k, v) for k, v in json.loads(labels))) != CPU
    ]
    db.executemany("UPDATE profiles SET profile_type = ? WHERE id = ?", typed)
    # Their successors lead with the profile type (created by SCHEMA).
    db.execute("DROP INDEX IF EXISTS profiles_service")


def migrate(db: sqlite3.Connection, version: str | None) -> None:
    """Create the schema of a new database, or upgrade one of ``version`` (``'1'`` to ``'3'``).

    The caller holds the write transaction (``BEGIN IMMEDIATE``) and commits it.
    """
    if version == SCHEMA_VERSION:
        return
    if version not in (None, "1", "2", "3"):
        raise sqlite3.DatabaseError(
            f"schema version {version!r} is newer than this span-profiles ({SCHEMA_VERSION!r})"
        )
    if version is not None:
        _type_profiles(db)
    if version in ("2", "3"):
        for table in ("span_stats", "name_stacks"):
            db.execute(f"ALTER TABLE {table} ADD COLUMN nanos REAL NOT NULL DEFAULT 0")
            db.execute(f"UPDATE {table} SET nanos = count * {_PERIOD_NANOS.format(table=table)}")
    if version == "3":
        db.execute("DROP TABLE name_stacks_hourly")
    _run(db, SCHEMA)
    if version == "1":
        register_functions(db)
        _run(db, _BACKFILL)
    if version is not None:
        rollups.rebuild_all(db.cursor())
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
    )
