"""The writer: one connection that stores uploads, migrates old databases and enforces retention.

:class:`ProfileStore` opens (and creates) a database in WAL mode, so readers
(:class:`~span_profiles.receiver.query.reader.ProfileReader`, other processes) read while it
writes and never wait for it. Each :meth:`ProfileStore.add` is one transaction: the samples and
their rollups (:mod:`.rollups`) together, or nothing. Reading is not done here: open a
:class:`~span_profiles.receiver.query.reader.ProfileReader` on the same path.

This module uses only the standard library: storing needs no protobuf.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from span_profiles.receiver.model import (
    SPAN_ID_LABEL,
    SPAN_NAME_LABEL,
    Labels,
    Profile,
    Series,
    normalize_sample_labels,
    profile_type_of,
    service_of,
)
from span_profiles.receiver.storage import migrations, retention, rollups
from span_profiles.receiver.storage.retention import Retention, RetentionStatus
from span_profiles.receiver.storage.rollups import NameStackKey, SpanKey
from span_profiles.receiver.storage.schema import is_busy, schema_version

__all__ = ["ProfileStore"]

_STACK_CACHE_SIZE = 100_000

_LabelInfo = tuple[str, list[tuple[str, str]], list[str]]
_K = TypeVar("_K")


class ProfileStore:
    """A SQLite profile database, opened for writing: :meth:`add` stores, retention trims.

    Methods are serialised by an internal lock, so one store may be shared by threads. Only one
    writer should be open per file at a time (another process's writes are seen, but every write
    waits for the lock of the other). Queries go through a
    :class:`~span_profiles.receiver.query.reader.ProfileReader`, on their own connection.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        retention: Retention | None = None,
    ) -> None:
        """Open the database at ``path``, creating it or upgrading an older schema version.

        Args:
            path: The database file. It and its parent directories are created.
            timeout: Seconds to wait for another process's lock (also while creating the schema).
            retention: Max age and max size the writer enforces (:class:`Retention` defaults).

        Raises:
            sqlite3.Error: The file cannot be opened, is not a profile database, or is read-only.
        """
        self.path = Path(path)
        self.retention = retention if retention is not None else Retention()
        self._lock = threading.RLock()
        self._next_retention = 0.0
        self._stack_ids: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._data_version = -1
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
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _create_once(self) -> None:
        db = self._db
        if schema_version(db) is None:
            # Only takes effect before the first table exists: deleted pages go back to the OS.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            migrations.migrate(db, schema_version(db))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

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

        Each profile stores one value column (see :meth:`Profile.value_index`) under the profile
        type its series names (:func:`~span_profiles.receiver.model.profile_type_of`); samples
        whose value is zero are skipped, and a profile left without samples stores nothing. The
        legacy ``profile_id`` sample label is stored as ``span_id``. Validation is the caller's job
        (:func:`~span_profiles.receiver.ingest.validate.validate_series`). On any error (a full
        disk included) nothing of the call is stored and the error raised is SQLite's own.
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
                    kind = profile_type_of(one.labels)
                    series_labels = json.dumps([list(pair) for pair in one.labels])
                    for profile in one.profiles:
                        stored += self._insert_profile(
                            cursor, profile, kind, service, series_labels, when
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
        profile_type: str,
        service: str,
        series_labels: str,
        when: float,
    ) -> int:
        index = profile.value_index()
        # Explicit sample ids (the write lock is held), so every table takes one executemany.
        first_id = cursor.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()[0] + 1
        sample_rows: list[list[object]] = []
        label_rows: list[tuple[int, str, str]] = []
        spans: dict[SpanKey, tuple[int, float]] = {}
        stacks: dict[NameStackKey, tuple[int, float]] = {}
        # Samples of one request share their label tuple, decoded stacks share their tuples.
        label_cache: dict[Labels, _LabelInfo] = {}
        for sample in profile.samples:
            value = sample.values[index] if sample.values else 0
            if value == 0:
                continue
            stack_id = self._stack_id(cursor, (sample.functions, sample.files))
            info = label_cache.get(sample.labels)
            if info is None:
                info = label_cache[sample.labels] = _label_info(sample.labels)
            labels_json, distinct, names = info
            # Float: the rollups sum nanoseconds as REAL (a sum of int64 values may overflow).
            count, nanos = profile.count_of(value), float(profile.nanos_of(value))
            sample_id = first_id + len(sample_rows)
            sample_rows.append([sample_id, None, stack_id, count, value, labels_json])
            label_rows.extend((sample_id, k, v) for k, v in distinct)
            for position, name in enumerate(names):
                first = int(position == 0)
                _add(stacks, (name, stack_id, first), count, nanos)
                for key, span_id in distinct:
                    if key == SPAN_ID_LABEL:
                        _add(spans, (span_id, name, first), count, nanos)
        if not sample_rows:
            return 0
        sample_type, sample_unit = profile.sample_types[index] if profile.sample_types else ("", "")
        cursor.execute(
            "INSERT INTO profiles (profile_type, service, received_at, series_labels, sample_type,"
            " sample_unit, period_type, period_unit, period, time_nanos, duration_nanos)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                profile_type,
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
        for row in sample_rows:
            row[1] = profile_id
        cursor.executemany(
            "INSERT INTO samples (id, profile_id, stack_id, count, value, labels)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            sample_rows,
        )
        cursor.executemany(
            "INSERT INTO sample_labels (sample_id, key, value) VALUES (?, ?, ?)", label_rows
        )
        rollups.add_profile(cursor, profile_id, profile_type, service, when, spans, stacks)
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
        now = time.time() if now is None else now
        self._next_retention = now + self.retention.check_interval
        with self._lock:
            deleted = retention.delete_expired(self._db, self.retention, now)
            if deleted:
                self._stack_ids.clear()
        return deleted

    def retention_status(self) -> RetentionStatus:
        """The retention settings and the current size and time span of the database."""
        with self._lock:
            return retention.status(self._db, self.path, self.retention, read_only=False)


def _label_info(labels: Labels) -> _LabelInfo:
    """A sample's labels as stored: JSON in wire order, distinct pairs, its span names sorted."""
    normalized = normalize_sample_labels(labels)
    distinct = list(dict.fromkeys(normalized))
    names = sorted({v for k, v in distinct if k == SPAN_NAME_LABEL}) or [""]
    return json.dumps([list(pair) for pair in normalized]), distinct, names


def _add(totals: dict[_K, tuple[int, float]], key: _K, count: int, nanos: float) -> None:
    old_count, old_nanos = totals.get(key, (0, 0.0))
    totals[key] = (old_count + count, old_nanos + nanos)
