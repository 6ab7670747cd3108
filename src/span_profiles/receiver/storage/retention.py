"""How much a database keeps: the oldest profiles go past a maximum age or size.

The writer (:class:`~span_profiles.receiver.storage.writer.ProfileStore`) enforces a
:class:`Retention` when the receiver starts and then at most every ``check_interval`` seconds while
profiles arrive. Each deletion is one transaction that also rebuilds the rollups of the spans and
hours it touched, so they keep equal to what is left.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from span_profiles.receiver.storage import rollups
from span_profiles.receiver.storage.schema import connect_read_only

__all__ = ["Retention", "RetentionStatus", "delete_expired", "read_status", "status"]


@dataclass(frozen=True)
class Retention:
    """How much the writer keeps: profiles older than ``max_age`` or beyond ``max_bytes`` go.

    The receiver enforces it when it starts and then at most every ``check_interval`` seconds while
    profiles arrive; the oldest profiles go first. ``None`` turns a bound off.
    """

    max_age: float | None = 7 * 86400.0
    """Seconds a profile is kept after it arrived (default 7 days)."""
    max_bytes: int | None = 1024 * 1024 * 1024
    """Bytes the database may use (default 1 GiB, about 2.2M samples of short requests: benchmarks/README.md);
    trimmed to 90 % when over."""
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


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the pages in use (the file minus its free pages)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def delete_expired(db: sqlite3.Connection, retention: Retention, now: float) -> int:
    """Delete profiles past ``max_age``, then the oldest while over ``max_bytes``; return how many.

    ``db`` is the writer's connection, outside a transaction.
    """
    deleted = 0
    if retention.max_age is not None:
        deleted += _delete_profiles(db, "received_at < ?", (now - retention.max_age,))
    for _ in range(4):
        if retention.max_bytes is None or used_bytes(db) <= retention.max_bytes:
            break
        count = db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]
        if count == 0:
            break
        share = 1.0 - 0.9 * retention.max_bytes / used_bytes(db)
        row = db.execute(
            "SELECT id FROM profiles ORDER BY id LIMIT 1 OFFSET ?",
            (max(math.ceil(share * count) - 1, 0),),
        ).fetchone()
        deleted += _delete_profiles(db, "id <= ?", (row[0],))
    if deleted:
        # Returns the freed pages to the file system (databases created with auto_vacuum).
        # execute() would step it once, freeing one page; executescript() runs it out.
        db.executescript("PRAGMA incremental_vacuum;")
    return deleted


def _delete_profiles(db: sqlite3.Connection, condition: str, params: tuple[object, ...]) -> int:
    doomed = f"SELECT id FROM profiles WHERE {condition}"
    cursor = db.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        rollups.mark_touched(cursor, doomed, params)
        cursor.execute(
            "DELETE FROM sample_labels WHERE sample_id IN"
            f" (SELECT id FROM samples WHERE profile_id IN ({doomed}))",
            params,
        )
        for table in ("samples", "span_stats", "name_stacks"):
            cursor.execute(f"DELETE FROM {table} WHERE profile_id IN ({doomed})", params)
        deleted = cursor.execute(f"DELETE FROM profiles WHERE {condition}", params).rowcount
        if deleted:
            rollups.rebuild_touched(cursor)
            cursor.execute(
                "DELETE FROM stacks WHERE NOT EXISTS"
                " (SELECT 1 FROM name_stacks n WHERE n.stack_id = stacks.id)"
            )
        cursor.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()
    return int(deleted)


def status(
    db: sqlite3.Connection, path: Path, retention: Retention, *, read_only: bool
) -> RetentionStatus:
    """``retention`` and what the database at ``path`` (open as ``db``) holds now."""
    profiles, oldest, newest = db.execute(
        "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM profiles"
    ).fetchone()
    used = used_bytes(db)
    wal = path.with_name(path.name + "-wal")
    file_bytes = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return RetentionStatus(
        path=path,
        read_only=read_only,
        max_age=retention.max_age,
        max_bytes=retention.max_bytes,
        file_bytes=file_bytes,
        used_bytes=used,
        profiles=profiles,
        oldest=oldest,
        newest=newest,
    )


def read_status(
    path: Path, retention: Retention | None = None, timeout: float = 10.0
) -> RetentionStatus:
    """:func:`status` of the database at ``path``, read without a write lock (``doctor`` does).

    ``retention`` is what its writer enforces (the defaults of ``span-profiles serve`` when
    ``None``: the settings are not stored in the database).
    """
    db = connect_read_only(path, timeout)
    try:
        return status(db, path, retention if retention is not None else Retention(), read_only=True)
    finally:
        db.close()
