"""The SQLite schema of a profile database, where it lives, and how a reader opens it.

Schema version 4; all times are Unix seconds, text columns are UTF-8, ``nanos`` is each sample's
weight in nanoseconds (:func:`~span_profiles.receiver.model.nanos_of`: CPU time for ``cpu``,
wall-clock time for ``wall``), summed as REAL: like any float it cannot overflow, and it is exact
up to 104 days of CPU per row::

    meta(key TEXT PRIMARY KEY, value TEXT)             -- 'schema_version' = '4'
    profiles(id INTEGER PRIMARY KEY,                   -- one row per stored pprof profile
             service TEXT,                             -- the series' service_name label
             received_at REAL,                         -- arrival time at the receiver
             series_labels TEXT,                       -- JSON [[name, value], ...] in upload order
             sample_type TEXT, sample_unit TEXT,       -- the stored value column, e.g. cpu/nanoseconds
             period_type TEXT, period_unit TEXT, period INTEGER,
             time_nanos INTEGER, duration_nanos INTEGER,
             profile_type TEXT)                        -- 'cpu', 'wall', ... from the __name__ label
    stacks(id INTEGER PRIMARY KEY,
           functions TEXT,                             -- JSON [name, ...], leaf first
           files TEXT)                                 -- JSON [file, ...] parallel to functions
    samples(id INTEGER PRIMARY KEY, profile_id -> profiles.id, stack_id -> stacks.id,
            count INTEGER,                             -- value / period, rounded; >= 1
            value INTEGER,                             -- raw value, e.g. CPU nanoseconds
            labels TEXT)                               -- JSON [[key, value], ...] wire order, repeats kept
    sample_labels(sample_id -> samples.id, key TEXT, value TEXT)   -- distinct pairs per sample

The rollups, written with each profile so that no view scans the samples (see
:mod:`.rollups`)::

    span_stats(profile_id, span_id, span_name, first, count, nanos)        -- per profile
    name_stacks(profile_id, span_name, stack_id, first, count, nanos)      -- per profile
    span_totals(profile_type, service, span_id, span_name,                 -- per span: its last
                count, nanos, first_seen, last_seen)                       -- name, all samples
    span_names(profile_type, service, span_id, span_name,                  -- per span and name
               count, nanos, first_seen, last_seen)
    name_stacks_hourly(profile_type, span_name, hour, service, stack_id,   -- per hour
                       first, count, nanos)

``span_name`` is ``''`` for a sample without one. A sample with several ``span_name`` labels has
one per-profile row per name, with ``first = 1`` on exactly one of them: sum ``count`` over
``first = 1`` rows for totals, over ``span_name = ?`` rows for one name. ``hour`` is
``received_at // 3600``.

Sums of ``count`` cannot overflow: one sample holds at most
:data:`~span_profiles.receiver.ingest.limits.MAX_SAMPLE_COUNT` periods.

Query plans: start from the table whose index narrows most and write the join order with
``CROSS JOIN`` (SQLite keeps that order); SQLite's own choice scanned every sample.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from span_profiles.receiver.model import nanos_of

__all__ = [
    "HOUR",
    "SAMPLE_NANOS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SchemaMismatch",
    "check_schema",
    "connect_read_only",
    "default_db_path",
    "is_busy",
    "register_functions",
    "schema_version",
]

SCHEMA_VERSION = "4"
"""The version this code writes and reads; older ones are migrated when opened for writing."""
HOUR = 3600
"""Seconds per row of the hourly rollups."""
SAMPLE_NANOS = "nanos_of(s.value, s.count, p.sample_unit, p.period_unit, p.period)"
"""One sample's nanoseconds in SQL (samples ``s``, profiles ``p``): :func:`register_functions`."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    received_at REAL NOT NULL,
    series_labels TEXT NOT NULL,
    sample_type TEXT NOT NULL,
    sample_unit TEXT NOT NULL,
    period_type TEXT NOT NULL,
    period_unit TEXT NOT NULL,
    period INTEGER NOT NULL,
    time_nanos INTEGER NOT NULL,
    duration_nanos INTEGER NOT NULL,
    profile_type TEXT NOT NULL DEFAULT 'cpu'
);
CREATE INDEX IF NOT EXISTS profiles_received ON profiles (received_at);
CREATE INDEX IF NOT EXISTS profiles_type_received ON profiles (profile_type, received_at);
CREATE INDEX IF NOT EXISTS profiles_type_service
    ON profiles (profile_type, service, received_at);
CREATE TABLE IF NOT EXISTS stacks (
    id INTEGER PRIMARY KEY,
    functions TEXT NOT NULL,
    files TEXT NOT NULL,
    UNIQUE (functions, files)
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES profiles (id),
    stack_id INTEGER NOT NULL REFERENCES stacks (id),
    count INTEGER NOT NULL,
    value INTEGER NOT NULL,
    labels TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_profile ON samples (profile_id);
-- Distinct (key, value) pairs per sample, for filtering (samples.labels keeps order and repeats).
CREATE TABLE IF NOT EXISTS sample_labels (
    sample_id INTEGER NOT NULL REFERENCES samples (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_labels_kv ON sample_labels (key, value, sample_id);
CREATE INDEX IF NOT EXISTS sample_labels_sample ON sample_labels (sample_id, key);
CREATE TABLE IF NOT EXISTS span_stats (
    profile_id INTEGER NOT NULL REFERENCES profiles (id),
    span_id TEXT NOT NULL,
    span_name TEXT NOT NULL,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    nanos REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS span_stats_span ON span_stats (span_id, profile_id);
CREATE INDEX IF NOT EXISTS span_stats_profile ON span_stats (profile_id);
CREATE TABLE IF NOT EXISTS name_stacks (
    profile_id INTEGER NOT NULL REFERENCES profiles (id),
    span_name TEXT NOT NULL,
    stack_id INTEGER NOT NULL REFERENCES stacks (id),
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    nanos REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS name_stacks_name ON name_stacks (span_name, profile_id);
CREATE INDEX IF NOT EXISTS name_stacks_profile ON name_stacks (profile_id);
CREATE INDEX IF NOT EXISTS name_stacks_stack ON name_stacks (stack_id);
CREATE TABLE IF NOT EXISTS span_totals (
    profile_type TEXT NOT NULL,
    service TEXT NOT NULL,
    span_id TEXT NOT NULL,
    span_name TEXT NOT NULL,
    count INTEGER NOT NULL,
    nanos REAL NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (profile_type, service, span_id)
) WITHOUT ROWID;
-- Covers a window's spans (and the test for those that cross its edges): no table lookup.
CREATE INDEX IF NOT EXISTS span_totals_seen
    ON span_totals (profile_type, last_seen, first_seen, service, span_name, count, nanos);
-- Covers the overview's per-endpoint sums over the whole store: no sort, no table lookup.
CREATE INDEX IF NOT EXISTS span_totals_endpoint
    ON span_totals (profile_type, service, span_name, nanos, count, last_seen);
CREATE TABLE IF NOT EXISTS span_names (
    profile_type TEXT NOT NULL,
    service TEXT NOT NULL,
    span_id TEXT NOT NULL,
    span_name TEXT NOT NULL,
    count INTEGER NOT NULL,
    nanos REAL NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (profile_type, service, span_id, span_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS span_names_seen
    ON span_names (profile_type, span_name, last_seen, first_seen, service, count, nanos);
CREATE TABLE IF NOT EXISTS name_stacks_hourly (
    profile_type TEXT NOT NULL,
    span_name TEXT NOT NULL,
    hour INTEGER NOT NULL,
    service TEXT NOT NULL,
    stack_id INTEGER NOT NULL REFERENCES stacks (id),
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    nanos REAL NOT NULL,
    PRIMARY KEY (profile_type, span_name, hour, service, stack_id, first)
) WITHOUT ROWID;
"""
"""Every table and index of the current version (``IF NOT EXISTS``: run on any version)."""


class SchemaMismatch(sqlite3.DatabaseError):
    """The database has another schema version than :data:`SCHEMA_VERSION` (opened for reading)."""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/span-profiles/profiles.db``, else ``~/.local/share/span-profiles/profiles.db``."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "span-profiles" / "profiles.db"


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds a lock (worth a retry)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def schema_version(db: sqlite3.Connection) -> str | None:
    """The ``schema_version`` stored in ``meta``; ``None`` for a database without one."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def register_functions(db: sqlite3.Connection) -> None:
    """Give ``db`` the SQL function ``nanos_of``: :func:`~span_profiles.receiver.model.nanos_of`,
    the one rule for a sample's nanoseconds, for queries that read samples."""
    db.create_function("nanos_of", 5, nanos_of, deterministic=True)


def check_schema(db: sqlite3.Connection) -> None:
    """Raise :class:`SchemaMismatch` unless ``db`` holds :data:`SCHEMA_VERSION`."""
    version = schema_version(db)
    if version != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"schema version {version!r}, not {SCHEMA_VERSION!r}:"
            " open it once for writing (span-profiles serve) to upgrade it"
        )


def connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the database at ``path``, its schema checked.

    Reads never take a write lock and, in WAL mode, never wait for the writer. A WAL database on
    read-only storage cannot get its shared-memory file: it is then opened as immutable (no
    writer can be running there anyway).

    Raises:
        sqlite3.OperationalError: No database at ``path``.
        SchemaMismatch: The database has another schema version.
    """
    if not path.exists():
        raise sqlite3.OperationalError(f"no database at {path}")
    uri = path.resolve().as_uri()
    db = sqlite3.connect(
        f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    register_functions(db)
    try:
        check_schema(db)
        return db
    except SchemaMismatch:
        db.close()
        raise
    except sqlite3.OperationalError:
        db.close()
    db = sqlite3.connect(
        f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
    )
    register_functions(db)
    try:
        check_schema(db)
    except BaseException:
        db.close()
        raise
    return db
