"""The read API: :class:`ProfileReader`, used by the command line, the web UI, the exports and you.

A reader opens the database read-only, one connection per thread, and never touches the writer's
connection or lock: in WAL mode a long query neither waits for the writer nor delays it. Every
query takes one :class:`~span_profiles.receiver.query.selection.Selection` (``profile_type``
``cpu`` unless it says otherwise) and has one implementation:

* stack counts and top functions: :mod:`.stacks`;
* the span list and one span's summary, with the one naming rule for a renamed span: :mod:`.spans`;
* the samples themselves: :mod:`.samples`.

Example::

    with ProfileReader(path) as reader:
        selection = Selection(span_ids=("8d1510b9974d53af",))
        for stat in reader.top(selection, limit=10):
            print(stat.name, stat.self_count, stat.total_count)
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from span_profiles.receiver.model import CPU
from span_profiles.receiver.query import samples as _samples
from span_profiles.receiver.query import spans as _spans
from span_profiles.receiver.query import sql as _sql
from span_profiles.receiver.query import stacks as _stacks
from span_profiles.receiver.query.samples import StoredSample
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.spans import SpanOrder, SpanStat
from span_profiles.receiver.query.stacks import FunctionStat, StackCount
from span_profiles.receiver.storage.schema import connect_read_only

__all__ = ["ProfileReader"]

_ALL = Selection()


class ProfileReader:
    """Read-only queries on a profile database, safe to share between threads.

    Each thread gets its own read-only connection (opened on its first query), so queries run in
    parallel with each other and with the writer.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        """Open the database at ``path`` for reading.

        Works on read-only files and storage, and while a receiver writes.

        Raises:
            sqlite3.Error: No database at ``path``, not a profile database, or one of another
                schema version (open it once for writing to upgrade it).
        """
        self.path = Path(path)
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("the reader is closed")
                db = connect_read_only(self.path, self._timeout)
                self._connections.append(db)
            self._local.db = db
        return db

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read-only SQL statement (the schema is in
        :mod:`span_profiles.receiver.storage.schema`)."""
        rows: list[Any] = self._connection().execute(sql, params).fetchall()
        return rows

    def close(self) -> None:
        """Close every connection of this reader."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    def __enter__(self) -> ProfileReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries ---------------------------------------------------------------------------------

    def samples(self, selection: Selection = _ALL) -> Iterator[StoredSample]:
        """The selected samples, in arrival order, fetched in batches."""
        return _samples.iter_samples(self, selection)

    def has_samples(self, selection: Selection = _ALL) -> bool:
        """Whether any stored sample is selected."""
        return _samples.has_samples(self, selection)

    def stack_counts(self, selection: Selection = _ALL) -> list[StackCount]:
        """The selected samples per distinct stack, most samples first: a flame graph's input."""
        return _stacks.stack_counts(self, selection)

    def total_count(self, selection: Selection = _ALL) -> int:
        """How many samples are selected (each once, whatever labels it carries)."""
        return _stacks.total_count(self, selection)

    def top(self, selection: Selection = _ALL, *, limit: int | None = 20) -> list[FunctionStat]:
        """The functions with most samples, by self count then total count (then name).

        A recursive function counts once per sample in ``total_count``. ``limit=None``: all.
        """
        return _stacks.top_functions(self.stack_counts(selection), limit=limit)

    def spans(
        self, selection: Selection = _ALL, *, limit: int | None = 50, order: SpanOrder = "newest"
    ) -> list[SpanStat]:
        """Span ids seen in ``span_id`` sample labels, one per span and service.

        ``order="newest"``: most recently seen first (ties: more samples, then span id);
        ``"nanos"``: most CPU (the profile type's nanoseconds) first. ``limit=None``: all. With
        ``span_names`` only those names' samples count. A sample with several span ids counts for
        each of them; a span renamed while it ran is listed once, under its last name
        (:func:`~span_profiles.receiver.query.spans.last_name`).
        """
        return _spans.spans(self, selection, limit=limit, order=order)

    def services(self, profile_type: str = CPU) -> list[str]:
        """Distinct service names with profiles of ``profile_type``, sorted."""
        rows = self.fetch(
            "SELECT DISTINCT service FROM profiles WHERE profile_type = ? ORDER BY 1",
            (profile_type,),
        )
        return [row[0] for row in rows]

    def profile_types(self) -> list[str]:
        """Distinct profile types stored, sorted."""
        return [
            row[0] for row in self.fetch("SELECT DISTINCT profile_type FROM profiles ORDER BY 1")
        ]

    def newest_arrival(self, profile_type: str = CPU) -> float | None:
        """Arrival time of the newest profile of ``profile_type``, ``None`` when there is none."""
        return _sql.newest_arrival(self, profile_type)
