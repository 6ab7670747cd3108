"""SQLite storage for received profiles, and the query API the CLI, tests and benchmarks use.

One row per stored profile (service, series labels, arrival time, sample type, period), one row per
sample (count, value, stack, ordered string labels with duplicates kept), stacks deduplicated.
The database runs in WAL mode so a receiver can write while other processes read.

This module uses only the standard library: querying needs no protobuf.

Example::

    with ProfileStore(path) as store:
        for stat in store.top(span_id="8d1510b9974d53af", limit=10):
            print(stat.name, stat.self_count, stat.total_count)
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from span_profiles.receiver.model import (
    SPAN_ID_LABEL,
    SPAN_NAME_LABEL,
    Series,
    normalize_sample_labels,
    service_of,
)

__all__ = [
    "FunctionStat",
    "ProfileStore",
    "SpanStat",
    "StoredSample",
    "default_db_path",
]

_SCHEMA_VERSION = "1"
_FETCH_BATCH = 500

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
-- Distinct (key, value) pairs per sample, for filtering; samples.labels keeps order and duplicates.
CREATE TABLE IF NOT EXISTS sample_labels (
    sample_id INTEGER NOT NULL REFERENCES samples (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_labels_kv ON sample_labels (key, value, sample_id);
CREATE INDEX IF NOT EXISTS sample_labels_sample ON sample_labels (sample_id, key);
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


def _count(value: int, period: int, units_match: bool) -> int:
    if period <= 0 or not units_match:
        return value
    count, remainder = divmod(value, period)
    if remainder * 2 >= period:
        count += 1
    # A non-zero value is at least one observation even if a sampler reports a fraction of a period.
    return max(count, 1) if value > 0 else count


class ProfileStore:
    """A SQLite profile database: write with :meth:`add`, query with :meth:`samples`, :meth:`top`
    and :meth:`spans`.

    Methods are serialised by an internal lock, so one store may be shared by threads. Separate
    processes may open the same file; WAL mode lets readers run while a writer commits.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        """Open (and create if needed) the database at ``path``; parent directories are created."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: transactions are explicit, one per add() call.
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Only a new database is written to here, so opening a reader never waits for a writer.
            if not self._has_schema():
                self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (_SCHEMA_VERSION,),
                )
        except BaseException:
            self._db.close()
            raise

    def _has_schema(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sample_labels'"
        ).fetchone()
        return row is not None

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
        """
        when = time.time() if received_at is None else received_at
        stored = 0
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                stacks: dict[tuple[str, str], int] = {}
                for one in series:
                    service = service_of(one.labels)
                    series_labels = json.dumps([list(pair) for pair in one.labels])
                    for profile in one.profiles:
                        index = profile.value_index()
                        sample_type, sample_unit = (
                            profile.sample_types[index] if profile.sample_types else ("", "")
                        )
                        units_match = sample_unit == profile.period_type[1]
                        cursor.execute(
                            "INSERT INTO profiles (service, received_at, series_labels,"
                            " sample_type, sample_unit, period_type, period_unit, period,"
                            " time_nanos, duration_nanos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        for sample in profile.samples:
                            value = sample.values[index] if sample.values else 0
                            if value == 0:
                                continue
                            stack_key = (json.dumps(sample.functions), json.dumps(sample.files))
                            stack_id = stacks.get(stack_key)
                            if stack_id is None:
                                stack_id = stacks[stack_key] = self._stack_id(cursor, *stack_key)
                            labels = normalize_sample_labels(sample.labels)
                            cursor.execute(
                                "INSERT INTO samples (profile_id, stack_id, count, value, labels)"
                                " VALUES (?, ?, ?, ?, ?)",
                                (
                                    profile_id,
                                    stack_id,
                                    _count(value, profile.period, units_match),
                                    value,
                                    json.dumps([list(pair) for pair in labels]),
                                ),
                            )
                            sample_id = cursor.lastrowid
                            cursor.executemany(
                                "INSERT INTO sample_labels (sample_id, key, value) VALUES (?, ?, ?)",
                                [(sample_id, k, v) for k, v in dict.fromkeys(labels)],
                            )
                            stored += 1
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        return stored

    @staticmethod
    def _stack_id(cursor: sqlite3.Cursor, functions: str, files: str) -> int:
        cursor.execute(
            "INSERT OR IGNORE INTO stacks (functions, files) VALUES (?, ?)", (functions, files)
        )
        row = cursor.execute(
            "SELECT id FROM stacks WHERE functions = ? AND files = ?", (functions, files)
        ).fetchone()
        stack_id: int = row[0]
        return stack_id

    # -- querying --------------------------------------------------------------------------------

    @staticmethod
    def _where(
        *,
        service: str | None,
        since: float | None,
        until: float | None,
        span_id: str | None = None,
        span_name: str | None = None,
    ) -> tuple[str, list[object]]:
        clauses: list[str] = ["1"]
        params: list[object] = []
        if service is not None:
            clauses.append("p.service = ?")
            params.append(service)
        if since is not None:
            clauses.append("p.received_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("p.received_at <= ?")
            params.append(until)
        for key, value in ((SPAN_ID_LABEL, span_id), (SPAN_NAME_LABEL, span_name)):
            if value is not None:
                clauses.append(
                    "EXISTS (SELECT 1 FROM sample_labels l"
                    " WHERE l.sample_id = s.id AND l.key = ? AND l.value = ?)"
                )
                params.extend((key, value))
        return " AND ".join(clauses), params

    def samples(
        self,
        *,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        span_id: str | None = None,
    ) -> Iterator[StoredSample]:
        """Yield stored samples in arrival order.

        ``since``/``until`` bound the arrival time (Unix seconds, inclusive). ``span_id`` keeps the
        samples that carry that ``span_id`` label among possibly several.
        """
        where, params = self._where(service=service, since=since, until=until, span_id=span_id)
        sql = (
            "SELECT s.id, s.labels, st.functions, st.files, s.count, p.service, p.received_at,"
            " s.value, p.series_labels FROM samples s JOIN profiles p ON p.id = s.profile_id"
            f" JOIN stacks st ON st.id = s.stack_id WHERE s.id > ? AND {where}"
            " ORDER BY s.id LIMIT ?"
        )
        last_id = 0
        while True:
            # Batches keyed on the rowid, so no cursor stays open across a yield.
            with self._lock:
                rows = self._db.execute(sql, [last_id, *params, _FETCH_BATCH]).fetchall()
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

    def total_count(
        self,
        *,
        span_id: str | None = None,
        span_name: str | None = None,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Sum of sample counts matching the same filters as :meth:`top`."""
        where, params = self._where(
            service=service, since=since, until=until, span_id=span_id, span_name=span_name
        )
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(s.count), 0) FROM samples s"
                f" JOIN profiles p ON p.id = s.profile_id WHERE {where}",
                params,
            ).fetchone()
        total: int = row[0]
        return total

    def top(
        self,
        *,
        span_id: str | None = None,
        span_name: str | None = None,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 20,
    ) -> list[FunctionStat]:
        """The functions with most samples, by self count then total count (then name).

        ``span_id`` matches every sample carrying that label, also when the sample carries other
        span ids too (the naive agent's multi-label problem stays visible). ``span_name`` matches
        the ``span_name`` label. A recursive function counts once per sample in ``total_count``.
        """
        where, params = self._where(
            service=service, since=since, until=until, span_id=span_id, span_name=span_name
        )
        with self._lock:
            rows = self._db.execute(
                "SELECT st.functions, SUM(s.count) FROM samples s"
                " JOIN profiles p ON p.id = s.profile_id JOIN stacks st ON st.id = s.stack_id"
                f" WHERE {where} GROUP BY s.stack_id",
                params,
            ).fetchall()
        self_counts: Counter[str] = Counter()
        total_counts: Counter[str] = Counter()
        for functions_json, count in rows:
            functions: list[str] = json.loads(functions_json)
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

    def spans(
        self,
        *,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> list[SpanStat]:
        """Span ids seen in ``span_id`` sample labels, most recently seen first.

        Ties on arrival time are ordered by sample count (descending), then span id. A sample with
        several span ids counts for each of them.
        """
        where, params = self._where(service=service, since=since, until=until)
        join = (
            "FROM sample_labels l JOIN samples s ON s.id = l.sample_id"
            " JOIN profiles p ON p.id = s.profile_id"
        )
        with self._lock:
            rows = self._db.execute(
                f"SELECT l.value, SUM(s.count), MAX(p.received_at) {join}"
                f" WHERE l.key = ? AND {where} GROUP BY l.value"
                " ORDER BY MAX(p.received_at) DESC, SUM(s.count) DESC, l.value LIMIT ?",
                [SPAN_ID_LABEL, *params, max(limit, 0)],
            ).fetchall()
            names: dict[str, Counter[str]] = {}
            if rows:
                marks = ", ".join("?" for _ in rows)
                for span_id, span_name, count in self._db.execute(
                    f"SELECT l.value, n.value, SUM(s.count) {join}"
                    " JOIN sample_labels n ON n.sample_id = s.id AND n.key = ?"
                    f" WHERE l.key = ? AND l.value IN ({marks}) AND {where}"
                    " GROUP BY l.value, n.value",
                    [SPAN_NAME_LABEL, SPAN_ID_LABEL, *(row[0] for row in rows), *params],
                ):
                    names.setdefault(span_id, Counter())[span_name] += count
        result: list[SpanStat] = []
        for span_id, count, last_seen in rows:
            counter = names.get(span_id)
            span_name = (
                min(counter.items(), key=lambda item: (-item[1], item[0]))[0] if counter else None
            )
            result.append(
                SpanStat(
                    span_id=span_id, span_name=span_name, sample_count=count, last_seen=last_seen
                )
            )
        return result

    def services(self) -> list[str]:
        """Distinct service names, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT service FROM profiles ORDER BY 1").fetchall()
        return [row[0] for row in rows]
