"""SQLite storage for received profiles, and the query API the CLI, the web UI and tests use.

The database runs in WAL mode so a receiver can write while other processes read; queries also work
on a database opened read-only (``ProfileStore(path, read_only=True)``, e.g. on read-only storage).
Every query takes one :class:`Filter`. Retention (:class:`Retention`: max age, max size) is enforced
by the writer while it serves.

Schema (version 3; all times are Unix seconds, text columns are UTF-8)::

    meta(key TEXT PRIMARY KEY, value TEXT)             -- 'schema_version' = '3'
    profiles(id INTEGER PRIMARY KEY,                   -- one row per stored pprof profile
             service TEXT,                             -- the series' service_name label
             received_at REAL,                         -- arrival time at the receiver
             series_labels TEXT,                       -- JSON [[name, value], ...] in upload order
             sample_type TEXT, sample_unit TEXT,       -- the stored value column, e.g. cpu/nanoseconds
             period_type TEXT, period_unit TEXT, period INTEGER,
             time_nanos INTEGER, duration_nanos INTEGER)
    stacks(id INTEGER PRIMARY KEY,
           functions TEXT,                             -- JSON [name, ...], leaf first
           files TEXT)                                 -- JSON [file, ...] parallel to functions
    samples(id INTEGER PRIMARY KEY, profile_id -> profiles.id, stack_id -> stacks.id,
            count INTEGER,                             -- value / period, rounded; >= 1
            value INTEGER,                             -- raw value, e.g. CPU nanoseconds
            labels TEXT)                               -- JSON [[key, value], ...] wire order, repeats kept
    sample_labels(sample_id -> samples.id, key TEXT, value TEXT)   -- distinct pairs per sample
    -- Aggregates written with each profile, so queries never scan samples:
    span_stats(profile_id -> profiles.id, span_id TEXT, span_name TEXT,  -- '' when the sample has none
               first INTEGER,                          -- 1 on exactly one row per (sample, span_id)
               count INTEGER)                          -- summed samples of that profile
    name_stacks(profile_id -> profiles.id, span_name TEXT,               -- '' when none
                stack_id -> stacks.id, first INTEGER,  -- 1 on exactly one row per sample
                count INTEGER)
    name_stacks_hourly(span_name TEXT, hour INTEGER,  -- hour = received_at // 3600
                       service TEXT, stack_id -> stacks.id, first INTEGER, count INTEGER,
                       PRIMARY KEY (span_name, hour, service, stack_id, first))  -- name_stacks
                                                       -- summed per hour and service

A sample with several ``span_name`` labels has one aggregate row per name: sum ``count`` over
``first = 1`` rows for totals, over ``span_name = ?`` rows for one name. Indexes:
``profiles(received_at)``, ``profiles(service, received_at)``, ``samples(profile_id)``,
``sample_labels(key, value, sample_id)``, ``sample_labels(sample_id, key)``,
``span_stats(span_id, profile_id)``, ``span_stats(profile_id)``, ``name_stacks(span_name,
profile_id)``, ``name_stacks(profile_id)``, ``name_stacks(stack_id)``. Queries over a long window
read whole hours from ``name_stacks_hourly`` and only the edge hours from ``name_stacks`` (see
``ProfileStore._name_stack_counts``). Start a query from the
table whose index narrows most and write the join order with ``CROSS JOIN`` (SQLite keeps that
order), as the queries here do: SQLite's own choice scanned every sample.

Sums of ``count`` cannot overflow: one sample holds at most
:data:`~span_profiles.receiver.model.MAX_SAMPLE_COUNT` periods. Sum ``value`` with ``TOTAL()``.

This module uses only the standard library: querying needs no protobuf.

Example::

    with ProfileStore(path, read_only=True) as store:
        for stat in store.top(Filter(span_id="8d1510b9974d53af"), limit=10):
            print(stat.name, stat.self_count, stat.total_count)
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypedDict

from span_profiles.receiver.model import (
    SPAN_ID_LABEL,
    SPAN_NAME_LABEL,
    Profile,
    Series,
    normalize_sample_labels,
    service_of,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Filter",
    "FunctionStat",
    "ProfileStore",
    "Retention",
    "RetentionStatus",
    "SpanStat",
    "StoredSample",
    "default_db_path",
]

_SCHEMA_VERSION = "3"
#: Seconds per row of the name_stacks_hourly rollup.
HOUR = 3600
_FETCH_BATCH = 500
_STACK_CACHE_SIZE = 100_000

_SCHEMA = """
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
    duration_nanos INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_received ON profiles (received_at);
CREATE INDEX IF NOT EXISTS profiles_service ON profiles (service, received_at);
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
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS span_stats_span ON span_stats (span_id, profile_id);
CREATE INDEX IF NOT EXISTS span_stats_profile ON span_stats (profile_id);
CREATE TABLE IF NOT EXISTS name_stacks (
    profile_id INTEGER NOT NULL REFERENCES profiles (id),
    span_name TEXT NOT NULL,
    stack_id INTEGER NOT NULL REFERENCES stacks (id),
    first INTEGER NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS name_stacks_name ON name_stacks (span_name, profile_id);
CREATE INDEX IF NOT EXISTS name_stacks_profile ON name_stacks (profile_id);
CREATE INDEX IF NOT EXISTS name_stacks_stack ON name_stacks (stack_id);
CREATE TABLE IF NOT EXISTS name_stacks_hourly (
    span_name TEXT NOT NULL,
    hour INTEGER NOT NULL,
    service TEXT NOT NULL,
    stack_id INTEGER NOT NULL REFERENCES stacks (id),
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (span_name, hour, service, stack_id, first)
) WITHOUT ROWID;
"""

_ROLLUP = """
INSERT INTO name_stacks_hourly (span_name, hour, service, stack_id, first, count)
SELECT ns.span_name, CAST(p.received_at / 3600 AS INTEGER), p.service, ns.stack_id, ns.first,
       SUM(ns.count)
FROM name_stacks ns JOIN profiles p ON p.id = ns.profile_id GROUP BY 1, 2, 3, 4, 5
"""

# Fills the aggregates of a version 1 database from its samples (first = 1 on the first name).
_BACKFILL = """
INSERT INTO span_stats (profile_id, span_id, span_name, first, count)
SELECT s.profile_id, l.value, COALESCE(n.value, ''),
       COALESCE(n.value = (SELECT MIN(m.value) FROM sample_labels m
                           WHERE m.sample_id = s.id AND m.key = 'span_name'), 1),
       SUM(s.count)
FROM sample_labels l JOIN samples s ON s.id = l.sample_id
LEFT JOIN sample_labels n ON n.sample_id = s.id AND n.key = 'span_name'
WHERE l.key = 'span_id' GROUP BY 1, 2, 3, 4;
INSERT INTO name_stacks (profile_id, span_name, stack_id, first, count)
SELECT s.profile_id, COALESCE(n.value, ''), s.stack_id,
       COALESCE(n.value = (SELECT MIN(m.value) FROM sample_labels m
                           WHERE m.sample_id = s.id AND m.key = 'span_name'), 1),
       SUM(s.count)
FROM samples s LEFT JOIN sample_labels n ON n.sample_id = s.id AND n.key = 'span_name'
GROUP BY 1, 2, 3, 4;
"""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/span-profiles/profiles.db``, else ``~/.local/share/span-profiles/profiles.db``."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "span-profiles" / "profiles.db"


@dataclass(frozen=True)
class StoredSample:
    """One stored sample with the context of the profile it arrived in."""

    labels: tuple[tuple[str, str], ...]
    """String sample labels in wire order; a key may repeat (e.g. several ``span_id`` values)."""
    functions: tuple[str, ...]
    """Function names, leaf first."""
    files: tuple[str, ...]
    """File names parallel to :attr:`functions` (``""`` when unknown)."""
    count: int
    """Number of samples (value / period)."""
    service: str
    """The profile's ``service_name`` series label."""
    received_at: float
    """When the receiver got the upload (Unix seconds)."""
    value: int
    """The raw pprof value, e.g. CPU nanoseconds."""
    series_labels: tuple[tuple[str, str], ...]
    """All series labels of the profile, in upload order."""

    def label_values(self, key: str) -> tuple[str, ...]:
        """All values of sample label ``key``, in order (empty when absent)."""
        return tuple(value for name, value in self.labels if name == key)


@dataclass(frozen=True)
class FunctionStat:
    """CPU samples attributed to one function name."""

    name: str
    self_count: int
    """Samples with this function as the leaf frame."""
    total_count: int
    """Samples with this function anywhere on the stack (counted once per sample)."""


@dataclass(frozen=True)
class SpanStat:
    """Samples carrying one ``span_id`` label value."""

    span_id: str
    span_name: str | None
    """The ``span_name`` label seen most often on those samples, if any."""
    sample_count: int
    last_seen: float
    """Arrival time (Unix seconds) of the newest profile holding such a sample."""


class FilterFields(TypedDict, total=False):
    """The fields of :class:`Filter` as keyword arguments of the query methods."""

    service: str | None
    since: float | None
    until: float | None
    span_id: str | None
    span_name: str | None


@dataclass(frozen=True)
class Filter:
    """Which samples a query looks at; every field left ``None`` matches everything."""

    service: str | None = None
    """The profile's ``service_name``."""
    since: float | None = None
    """Arrival time at or after (Unix seconds)."""
    until: float | None = None
    """Arrival time at or before (Unix seconds)."""
    span_id: str | None = None
    """Samples carrying this ``span_id`` label (among possibly several)."""
    span_name: str | None = None
    """Samples carrying this ``span_name`` label."""

    @classmethod
    def of(cls, where: Filter | None, fields: FilterFields) -> Filter:
        """``where`` with ``fields`` (keyword arguments of a query) applied on top."""
        base = where if where is not None else cls()
        return replace(base, **fields) if fields else base

    def profile_sql(self) -> tuple[str, list[object]]:
        """SQL conditions on the profiles table (alias ``p``) and their parameters."""
        clauses = ["1"]
        params: list[object] = []
        for clause, value in (
            ("p.service = ?", self.service),
            ("p.received_at >= ?", self.since),
            ("p.received_at <= ?", self.until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class Retention:
    """How much the writer keeps: profiles older than ``max_age`` or beyond ``max_bytes`` go.

    The receiver enforces it when it starts and then at most every ``check_interval`` seconds while
    profiles arrive; the oldest profiles go first. ``None`` turns a bound off.
    """

    max_age: float | None = 7 * 86400.0
    """Seconds a profile is kept after it arrived (default 7 days)."""
    max_bytes: int | None = 1024 * 1024 * 1024
    """Bytes the database may use (default 1 GiB, about 2.8M samples); trimmed to 90 % when over."""
    check_interval: float = 60.0
    """Seconds between two checks while serving."""


@dataclass(frozen=True)
class RetentionStatus:
    """The retention settings of a store and what it holds now (for ``span-profiles doctor``)."""

    path: Path
    read_only: bool
    max_age: float | None
    max_bytes: int | None
    file_bytes: int
    """The database file plus its WAL file, on disk."""
    used_bytes: int
    """Pages in use (the file minus free pages): what ``max_bytes`` bounds."""
    profiles: int
    oldest: float | None
    """Arrival time of the oldest stored profile."""
    newest: float | None
    """Arrival time of the newest stored profile."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class ProfileStore:
    """A SQLite profile database: write with :meth:`add`, query with :meth:`samples`, :meth:`top`,
    :meth:`spans` and :meth:`total_count`.

    Methods are serialised by an internal lock, so one store may be shared by threads. Separate
    processes may open the same file; WAL mode lets readers run while a writer commits.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        read_only: bool = False,
        retention: Retention | None = None,
    ) -> None:
        """Open the database at ``path``.

        Args:
            path: The database file. For writing it and its parent directories are created.
            timeout: Seconds to wait for another process's lock (also while creating the schema).
            read_only: Open for queries only; works on read-only files and storage.
            retention: Max age and max size the writer enforces (:class:`Retention` defaults).

        Raises:
            sqlite3.Error: The file cannot be opened, is not a profile database, or (for writing)
                is read-only.
        """
        self.path = Path(path)
        self.read_only = read_only
        self.retention = retention if retention is not None else Retention()
        self._lock = threading.RLock()
        self._next_retention = 0.0
        self._stack_ids: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._data_version = -1
        if read_only:
            self._db = self._connect_read_only(timeout)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit, one per add() call.
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._create(timeout)
            except BaseException:
                self._db.close()
                raise

    def _connect_read_only(self, timeout: float) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        if not self.path.exists():
            raise sqlite3.OperationalError(f"no database at {self.path}")
        db = sqlite3.connect(
            f"{uri}?mode=ro",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._check_schema(db)
            return db
        except sqlite3.OperationalError:
            db.close()
        # A WAL database on read-only storage cannot get its shared-memory file: read it as
        # immutable (no writer can be running there anyway).
        db = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            self._check_schema(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _check_schema(db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or row[0] != _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {row[0] if row else None!r}, not {_SCHEMA_VERSION!r}:"
                " open it once for writing (span-profiles serve) to upgrade it"
            )

    def _create(self, timeout: float) -> None:
        # Two processes creating a new database at the same instant: switching to WAL and the
        # first schema write can fail with "database is locked" without waiting, so retry.
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                self._create_once()
                return
            except sqlite3.OperationalError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _create_once(self) -> None:
        db = self._db
        if self._schema_version() is None:
            # Only takes effect before the first table exists: deleted pages go back to the OS.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        if self._schema_version() == _SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version()
            if version != _SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                if version == "1":
                    for statement in _BACKFILL.split(";"):
                        if statement.strip():
                            db.execute(statement)
                if version in ("1", "2"):
                    db.execute(_ROLLUP)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (_SCHEMA_VERSION,),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _schema_version(self) -> str | None:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if exists is None:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def add(self, series: Sequence[Series], *, received_at: float | None = None) -> int:
        """Store every profile of ``series`` in one transaction; return the number of samples stored.

        Each profile stores one value column (see :meth:`Profile.value_index`); samples whose value
        is zero are skipped. The legacy ``profile_id`` sample label is stored as ``span_id``.
        Validation is the caller's job (see :func:`~span_profiles.receiver.model.validate_series`).
        On any error (a full disk included) nothing of the call is stored and the error raised is
        SQLite's own.
        """
        when = time.time() if received_at is None else received_at
        stored = 0
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                self._check_stack_cache(cursor)
                for one in series:
                    service = service_of(one.labels)
                    series_labels = json.dumps([list(pair) for pair in one.labels])
                    for profile in one.profiles:
                        stored += self._insert_profile(
                            cursor, profile, service, series_labels, when
                        )
                cursor.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL does): a second ROLLBACK would
                # replace the real error with "no transaction is active".
                self._stack_ids.clear()
                if self._db.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        return stored

    def _insert_profile(
        self,
        cursor: sqlite3.Cursor,
        profile: Profile,
        service: str,
        series_labels: str,
        when: float,
    ) -> int:
        index = profile.value_index()
        sample_type, sample_unit = profile.sample_types[index] if profile.sample_types else ("", "")
        cursor.execute(
            "INSERT INTO profiles (service, received_at, series_labels, sample_type, sample_unit,"
            " period_type, period_unit, period, time_nanos, duration_nanos)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                service,
                when,
                series_labels,
                sample_type,
                sample_unit,
                profile.period_type[0],
                profile.period_type[1],
                profile.period,
                profile.time_nanos,
                profile.duration_nanos,
            ),
        )
        profile_id = cursor.lastrowid
        assert profile_id is not None
        # Explicit sample ids (the write lock is held), so every table takes one executemany.
        next_id = cursor.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()[0]
        sample_rows: list[tuple[int, int, int, int, int, str]] = []
        label_rows: list[tuple[int, str, str]] = []
        span_counts: Counter[tuple[str, str, int]] = Counter()
        name_counts: Counter[tuple[str, int, int]] = Counter()
        # Samples of one request share their label tuple, decoded stacks share their tuples.
        label_cache: dict[tuple[tuple[str, str], ...], tuple[str, list[tuple[str, str]], list[str]]]
        label_cache = {}
        for sample in profile.samples:
            value = sample.values[index] if sample.values else 0
            if value == 0:
                continue
            stack_id = self._stack_id(cursor, (sample.functions, sample.files))
            cached = label_cache.get(sample.labels)
            if cached is None:
                labels = normalize_sample_labels(sample.labels)
                distinct = list(dict.fromkeys(labels))
                names = sorted({v for k, v in distinct if k == SPAN_NAME_LABEL}) or [""]
                cached = label_cache[sample.labels] = (
                    json.dumps([list(pair) for pair in labels]),
                    distinct,
                    names,
                )
            labels_json, distinct, names = cached
            count = profile.count_of(value)
            next_id += 1
            sample_rows.append((next_id, profile_id, stack_id, count, value, labels_json))
            label_rows.extend((next_id, k, v) for k, v in distinct)
            for position, name in enumerate(names):
                name_counts[name, stack_id, int(position == 0)] += count
                for key, span_id in distinct:
                    if key == SPAN_ID_LABEL:
                        span_counts[span_id, name, int(position == 0)] += count
        cursor.executemany(
            "INSERT INTO samples (id, profile_id, stack_id, count, value, labels)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            sample_rows,
        )
        cursor.executemany(
            "INSERT INTO sample_labels (sample_id, key, value) VALUES (?, ?, ?)", label_rows
        )
        cursor.executemany(
            "INSERT INTO span_stats (profile_id, span_id, span_name, first, count)"
            " VALUES (?, ?, ?, ?, ?)",
            [(profile_id, *key, count) for key, count in span_counts.items()],
        )
        cursor.executemany(
            "INSERT INTO name_stacks (profile_id, span_name, stack_id, first, count)"
            " VALUES (?, ?, ?, ?, ?)",
            [(profile_id, *key, count) for key, count in name_counts.items()],
        )
        hour = int(when // HOUR)
        cursor.executemany(
            "INSERT INTO name_stacks_hourly (span_name, hour, service, stack_id, first, count)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET count = count + excluded.count",
            [
                (name, hour, service, stack, first, n)
                for (name, stack, first), n in name_counts.items()
            ],
        )
        return len(sample_rows)

    def _check_stack_cache(self, cursor: sqlite3.Cursor) -> None:
        # data_version changes when another connection committed (our own commits leave it).
        version = cursor.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._stack_ids.clear()
            self._data_version = version

    def _stack_id(
        self, cursor: sqlite3.Cursor, stack: tuple[tuple[str, ...], tuple[str, ...]]
    ) -> int:
        # Agents resend the same stacks upload after upload: remember their ids. The cache is
        # emptied on a rollback, on retention's stack clean-up and when another connection wrote.
        stack_id = self._stack_ids.get(stack)
        if stack_id is not None:
            return stack_id
        if len(self._stack_ids) >= _STACK_CACHE_SIZE:
            self._stack_ids.clear()
        functions, files = json.dumps(stack[0]), json.dumps(stack[1])
        cursor.execute(
            "INSERT OR IGNORE INTO stacks (functions, files) VALUES (?, ?)", (functions, files)
        )
        row = cursor.execute(
            "SELECT id FROM stacks WHERE functions = ? AND files = ?", (functions, files)
        ).fetchone()
        stack_id = self._stack_ids[stack] = int(row[0])
        return stack_id

    # -- retention -------------------------------------------------------------------------------

    def enforce_retention_if_due(self, now: float | None = None) -> int:
        """Run :meth:`enforce_retention` if ``Retention.check_interval`` has passed since the last run."""
        now = time.time() if now is None else now
        if now < self._next_retention:
            return 0
        return self.enforce_retention(now)

    def enforce_retention(self, now: float | None = None) -> int:
        """Delete profiles past ``max_age``, then the oldest while over ``max_bytes``.

        Returns the number of profiles deleted. Each deletion is one transaction.
        """
        if self.read_only:
            return 0
        now = time.time() if now is None else now
        retention = self.retention
        self._next_retention = now + retention.check_interval
        deleted = 0
        with self._lock:
            if retention.max_age is not None:
                deleted += self._delete_profiles("received_at < ?", (now - retention.max_age,))
            for _ in range(4):
                if retention.max_bytes is None or self._used_bytes() <= retention.max_bytes:
                    break
                count = self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]
                if count == 0:
                    break
                share = 1.0 - 0.9 * retention.max_bytes / self._used_bytes()
                row = self._db.execute(
                    "SELECT id FROM profiles ORDER BY id LIMIT 1 OFFSET ?",
                    (max(math.ceil(share * count) - 1, 0),),
                ).fetchone()
                deleted += self._delete_profiles("id <= ?", (row[0],))
            if deleted:
                # Returns the freed pages to the file system (databases created with auto_vacuum).
                # execute() would step it once, freeing one page; executescript() runs it out.
                self._db.executescript("PRAGMA incremental_vacuum;")
        return deleted

    def _used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _delete_profiles(self, condition: str, params: tuple[object, ...]) -> int:
        doomed = f"SELECT id FROM profiles WHERE {condition}"
        cursor = self._db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            doomed_rollup = cursor.execute(
                "SELECT SUM(ns.count), ns.span_name, CAST(p.received_at / 3600 AS INTEGER),"
                " p.service, ns.stack_id, ns.first FROM profiles p"
                " CROSS JOIN name_stacks ns ON ns.profile_id = p.id"
                f" WHERE p.id IN ({doomed}) GROUP BY 2, 3, 4, 5, 6",
                params,
            ).fetchall()
            cursor.executemany(
                "UPDATE name_stacks_hourly SET count = count - ? WHERE span_name = ? AND hour = ?"
                " AND service = ? AND stack_id = ? AND first = ?",
                doomed_rollup,
            )
            cursor.execute("DELETE FROM name_stacks_hourly WHERE count <= 0")
            cursor.execute(
                "DELETE FROM sample_labels WHERE sample_id IN"
                f" (SELECT id FROM samples WHERE profile_id IN ({doomed}))",
                params,
            )
            for table in ("samples", "span_stats", "name_stacks"):
                cursor.execute(f"DELETE FROM {table} WHERE profile_id IN ({doomed})", params)
            deleted = cursor.execute(f"DELETE FROM profiles WHERE {condition}", params).rowcount
            if deleted:
                self._stack_ids.clear()
                cursor.execute(
                    "DELETE FROM stacks WHERE NOT EXISTS"
                    " (SELECT 1 FROM name_stacks n WHERE n.stack_id = stacks.id)"
                )
            cursor.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
        return int(deleted)

    def retention_status(self) -> RetentionStatus:
        """The retention settings and the current size and time span of the database."""
        with self._lock:
            profiles, oldest, newest = self._db.execute(
                "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM profiles"
            ).fetchone()
            used = self._used_bytes()
        wal = self.path.with_name(self.path.name + "-wal")
        file_bytes = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return RetentionStatus(
            path=self.path,
            read_only=self.read_only,
            max_age=self.retention.max_age,
            max_bytes=self.retention.max_bytes,
            file_bytes=file_bytes,
            used_bytes=used,
            profiles=profiles,
            oldest=oldest,
            newest=newest,
        )

    # -- querying --------------------------------------------------------------------------------

    def samples(
        self, where: Filter | None = None, /, **fields: Unpack[FilterFields]
    ) -> Iterator[StoredSample]:
        """Yield the samples matching the filter, in arrival order.

        ``since``/``until`` bound the arrival time (Unix seconds, inclusive). ``span_id`` keeps the
        samples that carry that ``span_id`` label among possibly several.
        """
        where = Filter.of(where, fields)
        profile_sql, params = where.profile_sql()
        columns = (
            "SELECT s.id, s.labels, st.functions, st.files, s.count, p.service, p.received_at,"
            " s.value, p.series_labels"
        )
        label = (SPAN_ID_LABEL, where.span_id) if where.span_id is not None else None
        if label is None and where.span_name is not None:
            label = (SPAN_NAME_LABEL, where.span_name)
        if label is not None:
            name_sql, name_params = self._name_condition(where, label)
            sql = (
                f"{columns} FROM sample_labels l CROSS JOIN samples s ON s.id = l.sample_id"
                " CROSS JOIN profiles p ON p.id = s.profile_id"
                " CROSS JOIN stacks st ON st.id = s.stack_id"
                f" WHERE l.key = ? AND l.value = ? AND l.sample_id > ? AND {profile_sql}{name_sql}"
                " ORDER BY l.sample_id LIMIT ?"
            )
            head: list[object] = [*label]
        else:
            sql = (
                f"{columns} FROM samples s CROSS JOIN profiles p ON p.id = s.profile_id"
                " CROSS JOIN stacks st ON st.id = s.stack_id"
                f" WHERE s.id > ? AND {profile_sql} ORDER BY s.id LIMIT ?"
            )
            head, name_params = [], []
        last_id = 0
        while True:
            # Batches keyed on the rowid, so no cursor stays open across a yield.
            with self._lock:
                rows = self._db.execute(
                    sql, [*head, last_id, *params, *name_params, _FETCH_BATCH]
                ).fetchall()
            if not rows:
                return
            last_id = rows[-1][0]
            for _, labels, functions, files, count, service_, received_at, value, series in rows:
                yield StoredSample(
                    labels=tuple((k, v) for k, v in json.loads(labels)),
                    functions=tuple(json.loads(functions)),
                    files=tuple(json.loads(files)),
                    count=count,
                    service=service_,
                    received_at=received_at,
                    value=value,
                    series_labels=tuple((k, v) for k, v in json.loads(series)),
                )

    @staticmethod
    def _name_condition(where: Filter, label: tuple[str, str]) -> tuple[str, list[object]]:
        """The span_name condition when the query is driven by the span_id label."""
        if label[0] == SPAN_ID_LABEL and where.span_name is not None:
            return (
                " AND EXISTS (SELECT 1 FROM sample_labels n"
                " WHERE n.sample_id = s.id AND n.key = ? AND n.value = ?)",
                [SPAN_NAME_LABEL, where.span_name],
            )
        return "", []

    def total_count(self, where: Filter | None = None, /, **fields: Unpack[FilterFields]) -> int:
        """Sum of sample counts matching the filter (the same samples :meth:`top` ranks)."""
        where = Filter.of(where, fields)
        profile_sql, params = where.profile_sql()
        if where.span_id is not None:
            # span_stats rows of one span: first = 1 counts each sample once.
            name_sql = "ss.span_name = ?" if where.span_name is not None else "ss.first = 1"
            sql = (
                "SELECT COALESCE(SUM(ss.count), 0) FROM span_stats ss"
                " CROSS JOIN profiles p ON p.id = ss.profile_id"
                f" WHERE ss.span_id = ? AND {name_sql} AND {profile_sql}"
            )
            head: list[object] = [where.span_id]
            if where.span_name is not None:
                head.append(where.span_name)
        else:
            return sum(self._name_stack_counts(where).values())
        with self._lock:
            row = self._db.execute(sql, [*head, *params]).fetchone()
        total: int = row[0]
        return total

    def _name_stack_counts(self, where: Filter) -> Counter[int]:
        """Stack id -> summed count for a filter without span_id.

        Whole hours inside the window come from the hourly rollup, the hours at its edges from the
        per-profile rows, so the cost follows the number of hours, not of uploads.
        """
        lo = -math.inf if where.since is None else math.ceil(where.since / HOUR)
        hi = math.inf if where.until is None else math.floor(where.until / HOUR) - 1
        counts: Counter[int] = Counter()
        name_sql = "span_name = ?" if where.span_name is not None else "first = 1"
        name_params: list[object] = [] if where.span_name is None else [where.span_name]
        with self._lock:
            if lo <= hi:
                sql = f"SELECT stack_id, SUM(count) FROM name_stacks_hourly WHERE {name_sql}"
                args = [*name_params]
                for clause, value in (("hour >= ?", lo), ("hour <= ?", hi)):
                    if math.isfinite(value):
                        sql += f" AND {clause}"
                        args.append(int(value))
                if where.service is not None:
                    sql += " AND service = ?"
                    args.append(where.service)
                counts.update(dict(self._db.execute(f"{sql} GROUP BY stack_id", args).fetchall()))
            profile_sql, params = where.profile_sql()
            if lo <= hi:
                # Only the uploads outside the whole hours taken above.
                edges = []
                if math.isfinite(lo):
                    edges.append("p.received_at < ?")
                    params.append(lo * HOUR)
                if math.isfinite(hi):
                    edges.append("p.received_at >= ?")
                    params.append((hi + 1) * HOUR)
                if not edges:
                    return counts
                profile_sql += f" AND ({' OR '.join(edges)})"
            if where.span_name is not None:
                sql = (
                    "SELECT ns.stack_id, SUM(ns.count) FROM name_stacks ns"
                    " CROSS JOIN profiles p ON p.id = ns.profile_id"
                    f" WHERE ns.span_name = ? AND {profile_sql} GROUP BY ns.stack_id"
                )
            else:
                sql = (
                    "SELECT ns.stack_id, SUM(ns.count) FROM profiles p"
                    " CROSS JOIN name_stacks ns ON ns.profile_id = p.id"
                    f" WHERE ns.first = 1 AND {profile_sql} GROUP BY ns.stack_id"
                )
            counts.update(dict(self._db.execute(sql, [*name_params, *params]).fetchall()))
        return counts

    def top(
        self, where: Filter | None = None, /, *, limit: int = 20, **fields: Unpack[FilterFields]
    ) -> list[FunctionStat]:
        """The functions with most samples, by self count then total count (then name).

        ``span_id`` matches every sample carrying that label, also when the sample carries other
        span ids too (the naive agent's multi-label problem stays visible). ``span_name`` matches
        the ``span_name`` label. A recursive function counts once per sample in ``total_count``.
        """
        stats = self.stack_counts(where, **fields)
        self_counts: Counter[str] = Counter()
        total_counts: Counter[str] = Counter()
        for functions, count in stats:
            if not functions:
                continue
            self_counts[functions[0]] += count
            for name in set(functions):
                total_counts[name] += count
        ranked = sorted(
            total_counts, key=lambda name: (-self_counts[name], -total_counts[name], name)
        )
        return [
            FunctionStat(name=name, self_count=self_counts[name], total_count=total_counts[name])
            for name in ranked[: max(limit, 0)]
        ]

    def stack_counts(
        self, where: Filter | None = None, /, **fields: Unpack[FilterFields]
    ) -> list[tuple[tuple[str, ...], int]]:
        """``(functions leaf first, summed count)`` per distinct stack matching the filter.

        The input of a flame graph; :meth:`top` ranks functions from it.
        """
        where = Filter.of(where, fields)
        profile_sql, params = where.profile_sql()
        if where.span_id is not None:
            name_sql, name_params = self._name_condition(where, (SPAN_ID_LABEL, where.span_id))
            inner = (
                "SELECT s.stack_id AS stack_id, SUM(s.count) AS n FROM sample_labels l"
                " CROSS JOIN samples s ON s.id = l.sample_id"
                " CROSS JOIN profiles p ON p.id = s.profile_id"
                f" WHERE l.key = ? AND l.value = ? AND {profile_sql}{name_sql}"
                " GROUP BY s.stack_id"
            )
            args: list[object] = [SPAN_ID_LABEL, where.span_id, *params, *name_params]
            with self._lock:
                rows = self._db.execute(
                    f"SELECT st.functions, t.n FROM ({inner}) t CROSS JOIN stacks st"
                    " ON st.id = t.stack_id",
                    args,
                ).fetchall()
            return [(tuple(json.loads(functions)), count) for functions, count in rows]
        counts = {stack: n for stack, n in self._name_stack_counts(where).items() if n}
        rows = []
        with self._lock:
            ids = list(counts)
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                marks = ", ".join("?" for _ in batch)
                rows += self._db.execute(
                    f"SELECT id, functions FROM stacks WHERE id IN ({marks})", batch
                ).fetchall()
        return [(tuple(json.loads(functions)), counts[stack]) for stack, functions in rows]

    def spans(
        self, where: Filter | None = None, /, *, limit: int = 50, **fields: Unpack[FilterFields]
    ) -> list[SpanStat]:
        """Span ids seen in ``span_id`` sample labels, most recently seen first.

        Ties on arrival time are ordered by sample count (descending), then span id. A sample with
        several span ids counts for each of them. ``span_name`` keeps the spans with samples of
        that name; counts stay each span's total in the window.
        """
        where = Filter.of(where, fields)
        limit = max(limit, 0)
        profile_sql, params = where.profile_sql()
        extra, extra_params = "", []
        if where.span_id is not None:
            extra, extra_params = " AND ss.span_id = ?", [where.span_id]
        if where.span_name is not None:
            extra += " AND ss.span_name = ?"
            extra_params.append(where.span_name)
        # Newest profiles first, until `limit` spans are found and no later one can tie with them.
        last_seen: dict[str, float] = {}
        with self._lock:
            cursor = self._db.execute(
                "SELECT p.received_at, ss.span_id FROM profiles p"
                " CROSS JOIN span_stats ss ON ss.profile_id = p.id"
                f" WHERE {profile_sql}{extra} ORDER BY p.received_at DESC",
                [*params, *extra_params],
            )
            try:
                for received_at, span_id in cursor:
                    if len(last_seen) >= limit and received_at < min(last_seen.values()):
                        break
                    last_seen.setdefault(span_id, received_at)
            finally:
                cursor.close()
            if not last_seen or limit == 0:
                return []
            marks = ", ".join("?" for _ in last_seen)
            rows = self._db.execute(
                "SELECT ss.span_id, ss.span_name, SUM(ss.count), SUM(ss.count * ss.first),"
                " MAX(p.received_at)"
                " FROM span_stats ss CROSS JOIN profiles p ON p.id = ss.profile_id"
                f" WHERE ss.span_id IN ({marks}) AND {profile_sql}"
                " GROUP BY ss.span_id, ss.span_name",
                [*last_seen, *params],
            ).fetchall()
        totals: Counter[str] = Counter()
        names: dict[str, dict[str, tuple[float, int]]] = {}
        for span_id, span_name, count, first_count, seen in rows:
            totals[span_id] += first_count
            # With a span_name filter the walk saw only that name's profiles.
            last_seen[span_id] = max(last_seen[span_id], seen)
            if span_name:
                # A span renamed while it ran (a bare method, then its route) is listed once,
                # under its last name: the one of its newest upload, then the most samples.
                known = names.setdefault(span_id, {})
                was_seen, was_count = known.get(span_name, (seen, 0))
                known[span_name] = (max(was_seen, seen), was_count + count)
        result: list[SpanStat] = []
        for span_id, seen in last_seen.items():
            named = names.get(span_id)
            span_name = (
                min(named.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[0]
                if named
                else None
            )
            result.append(
                SpanStat(
                    span_id=span_id,
                    span_name=span_name,
                    sample_count=totals[span_id],
                    last_seen=seen,
                )
            )
        result.sort(key=lambda stat: (-stat.last_seen, -stat.sample_count, stat.span_id))
        return result[:limit]

    def services(self) -> list[str]:
        """Distinct service names, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT service FROM profiles ORDER BY 1").fetchall()
        return [row[0] for row in rows]
