"""Read-only SQL for the views: stacks of a selection, one span's summary, the overview.

The views (flame graphs, diffs, exports, the web UI) need more than the store's :class:`Filter`
queries give: CPU and files with each stack, a union of span ids and span names, "the other spans
of this name". They all live here, against the store's schema (see :mod:`.store`), so that a schema
change touches one file. Every function only reads and takes the store's lock, as the store's own
queries do.

What reads what, so that a page never scans the samples table:

* the overview and an endpoint's spans: ``span_stats`` (one row per profile and span);
* a span name's stacks, or everything in a window: ``name_stacks`` (one row per profile, name and
  stack), minus the excluded spans' samples for "the other spans of this name";
* a span's stacks and the exports: its samples, found through ``sample_labels(key, value)``.

CPU is samples x the profile's sampling period (10 ms at the agent's 100 Hz), the resolution the
sampler has; exports carry each sample's raw value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from span_profiles.receiver.model import SPAN_ID_LABEL, SPAN_NAME_LABEL
from span_profiles.receiver.storage.writer import Filter, ProfileStore

__all__ = [
    "SampleRow",
    "Selection",
    "SpanRow",
    "SpanSummary",
    "StackCount",
    "has_samples",
    "iter_samples",
    "newest_arrival",
    "sample_rows",
    "span_rows",
    "span_summary",
    "stack_counts",
]

# CPU nanoseconds of one stored sample: its raw value when the profile's unit is nanoseconds, else
# count x period when the period is in nanoseconds. TOTAL (a float) never raises on overflow.
_PERIOD_NS = "(CASE WHEN p.period_unit = 'nanoseconds' THEN p.period ELSE 0 END)"
_CPU_NS = (
    "CASE WHEN p.sample_unit = 'nanoseconds' THEN s.value"
    " WHEN p.period_unit = 'nanoseconds' THEN s.count * p.period ELSE 0 END"
)


@dataclass(frozen=True)
class Selection:
    """Which stored samples a view shows.

    A sample is selected when it arrived in ``[since, until]`` (Unix seconds, inclusive, ``None`` =
    open), belongs to ``service`` (if given), carries one of ``span_ids`` or ``span_names`` (if
    either is given; a sample matching any of them is selected once) and carries none of
    ``exclude_span_ids``.
    """

    service: str | None = None
    since: float | None = None
    until: float | None = None
    span_ids: tuple[str, ...] = ()
    span_names: tuple[str, ...] = ()
    exclude_span_ids: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """A short human description, e.g. ``span_id 8d1510b9974d53af``."""
        parts = [f"span_id {span_id}" for span_id in self.span_ids]
        parts += [f"span_name {name!r}" for name in self.span_names]
        text = " or ".join(parts) or "all samples"
        if self.exclude_span_ids:
            text += " except span_id " + ", ".join(self.exclude_span_ids)
        if self.service is not None:
            text += f" of service {self.service!r}"
        return text


@dataclass(frozen=True)
class StackCount:
    """The samples of one distinct stack within a selection."""

    functions: tuple[str, ...]
    """Function names, leaf first (as stored)."""
    files: tuple[str, ...]
    """File names parallel to :attr:`functions`."""
    count: int
    """Number of samples."""
    cpu_ns: float
    """CPU nanoseconds of those samples."""


@dataclass(frozen=True)
class SampleRow:
    """One stored sample of a selection, for exports."""

    functions: tuple[str, ...]
    files: tuple[str, ...]
    count: int
    cpu_ns: int
    labels: tuple[tuple[str, str], ...]
    received_at: float
    period: int


@dataclass(frozen=True)
class SpanSummary:
    """What the span page shows above the flame graph."""

    span_id: str
    span_name: str | None
    service: str | None
    first_seen: float
    """Arrival time of the first profile holding one of its samples (Unix seconds)."""
    last_seen: float
    sample_count: int
    cpu_ns: float


@dataclass(frozen=True)
class _Sql:
    """``FROM`` and ``WHERE`` parts for a selection, with their parameters in order."""

    source: str
    source_params: list[object]
    where: str
    where_params: list[object]

    def query(
        self, select: str, joins: str = "", join_params: tuple[object, ...] = ()
    ) -> tuple[str, list[object]]:
        """``SELECT {select} FROM ... {joins} WHERE ...`` and its parameters.

        The join order is fixed with ``CROSS JOIN`` (SQLite keeps the left table outside): a
        span's samples drive the query from the label index, a window from the arrival index.
        """
        sql = f"SELECT {select} FROM {self.source} {joins} WHERE {self.where}"
        return sql, [*self.source_params, *join_params, *self.where_params]


class SpanRow(NamedTuple):
    """One span's totals within a selection (a row of the overview and of an endpoint's spans).

    A named tuple, not a dataclass: the overview builds one per span in the window.
    """

    span_id: str
    service: str
    span_name: str | None
    """The ``span_name`` most of its samples carry, ``None`` if none carries one."""
    sample_count: int
    cpu_ns: float
    first_seen: float
    last_seen: float


def _sql(
    selection: Selection, *, require_names: tuple[str, ...] = (), forbid_names: tuple[str, ...] = ()
) -> _Sql:
    source_params: list[object] = []
    source = "profiles p CROSS JOIN samples s ON s.profile_id = p.id"
    keys: list[str] = []
    for key, values in (
        (SPAN_ID_LABEL, selection.span_ids),
        (SPAN_NAME_LABEL, selection.span_names),
    ):
        if values:
            keys.append(f"(key = ? AND value IN ({', '.join('?' for _ in values)}))")
            source_params += [key, *values]
    if keys:
        # Driven from the (key, value, sample_id) index: a span's samples are found without a scan.
        source = (
            f"(SELECT DISTINCT sample_id FROM sample_labels WHERE {' OR '.join(keys)}) m"
            " CROSS JOIN samples s ON s.id = m.sample_id"
            " CROSS JOIN profiles p ON p.id = s.profile_id"
        )
    window, params = _window(selection)
    clauses = [window]
    if selection.exclude_span_ids:
        marks = ", ".join("?" for _ in selection.exclude_span_ids)
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM sample_labels x WHERE x.sample_id = s.id"
            f" AND x.key = ? AND x.value IN ({marks}))"
        )
        params += [SPAN_ID_LABEL, *selection.exclude_span_ids]
    for test, names in (("EXISTS", require_names), ("NOT EXISTS", forbid_names)):
        if names:
            marks = ", ".join("?" for _ in names)
            clauses.append(
                f"{test} (SELECT 1 FROM sample_labels y WHERE y.sample_id = s.id"
                f" AND y.key = ? AND y.value IN ({marks}))"
            )
            params += [SPAN_NAME_LABEL, *names]
    return _Sql(source, source_params, " AND ".join(clauses), params)


def _read(store: ProfileStore, sql: str, params: list[object]) -> list[Any]:
    # The store serialises its connection with this lock; the views share the store's connection.
    with store._lock:
        rows: list[Any] = store._db.execute(sql, params).fetchall()
    return rows


def _window(selection: Selection) -> tuple[str, list[object]]:
    """Conditions on the profiles table (alias ``p``) for the selection's service and window."""
    window = Filter(service=selection.service, since=selection.since, until=selection.until)
    return window.profile_sql()


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


def stack_counts(store: ProfileStore, selection: Selection) -> list[StackCount]:
    """The selected samples grouped by stack, most samples first (ties by stack).

    Span names (or a whole window) come from ``name_stacks``; span ids from their samples, except
    those already counted through a selected name; excluded spans' samples are subtracted.
    """
    totals: dict[int, list[float]] = {}

    def add(sql: str, params: list[object], sign: int = 1) -> None:
        for stack_id, count, cpu in _read(store, sql, params):
            entry = totals.setdefault(stack_id, [0, 0.0])
            entry[0] += sign * count
            entry[1] += sign * cpu

    window, window_params = _window(selection)
    names = selection.span_names
    if names or not selection.span_ids:
        if names:
            source = (
                "name_stacks ns CROSS JOIN profiles p ON p.id = ns.profile_id"
                f" WHERE ns.span_name IN ({_marks(names)})"
            )
        else:
            # first = 1: each sample once, whatever names it has.
            source = (
                "profiles p CROSS JOIN name_stacks ns ON ns.profile_id = p.id WHERE ns.first = 1"
            )
        add(
            f"SELECT ns.stack_id, SUM(ns.count), TOTAL(ns.count * {_PERIOD_NS}) FROM {source}"
            f" AND {window} GROUP BY ns.stack_id",
            [*names, *window_params],
        )
        if selection.exclude_span_ids:
            excluded = Selection(
                service=selection.service,
                since=selection.since,
                until=selection.until,
                span_ids=selection.exclude_span_ids,
            )
            sql, params = _sql(excluded, require_names=names).query(
                f"s.stack_id, SUM(s.count), TOTAL(s.count * {_PERIOD_NS})"
            )
            add(f"{sql} GROUP BY s.stack_id", params, sign=-1)
    if selection.span_ids:
        ids_only = Selection(
            service=selection.service,
            since=selection.since,
            until=selection.until,
            span_ids=selection.span_ids,
            exclude_span_ids=selection.exclude_span_ids,
        )
        sql, params = _sql(ids_only, forbid_names=names).query(
            f"s.stack_id, SUM(s.count), TOTAL(s.count * {_PERIOD_NS})"
        )
        add(f"{sql} GROUP BY s.stack_id", params)
    kept = {stack_id: entry for stack_id, entry in totals.items() if entry[0] > 0}
    result = []
    ids = list(kept)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for stack_id, functions, files in _read(
            store,
            f"SELECT id, functions, files FROM stacks WHERE id IN ({', '.join('?' for _ in chunk)})",
            list(chunk),
        ):
            count, cpu = kept[stack_id]
            result.append(
                StackCount(
                    functions=tuple(json.loads(functions)),
                    files=tuple(json.loads(files)),
                    count=int(count),
                    cpu_ns=float(cpu),
                )
            )
    result.sort(key=lambda stack: (-stack.count, stack.functions))
    return result


def iter_samples(store: ProfileStore, selection: Selection) -> Iterator[SampleRow]:
    """Every selected sample with its labels, in arrival order, fetched in batches."""
    sql, params = _sql(selection).query(
        f"s.id, s.labels, st.functions, st.files, s.count, {_CPU_NS}, p.received_at, p.period",
        joins="CROSS JOIN stacks st ON st.id = s.stack_id",
    )
    sql += " AND s.id > ? ORDER BY s.id LIMIT 1000"
    last_id = 0
    while True:
        # Batches keyed on the rowid, so no cursor stays open across a yield.
        rows = _read(store, sql, [*params, last_id])
        if not rows:
            return
        last_id = int(rows[-1][0])
        for _, labels, functions, files, count, cpu, received_at, period in rows:
            yield SampleRow(
                functions=tuple(json.loads(functions)),
                files=tuple(json.loads(files)),
                count=int(count),
                cpu_ns=int(cpu),
                labels=tuple((k, v) for k, v in json.loads(labels)),
                received_at=float(received_at),
                period=int(period),
            )


def span_summary(
    store: ProfileStore,
    span_id: str,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> SpanSummary | None:
    """Name, service, first and last arrival, samples and CPU of one span; ``None`` if unseen.

    The name and service are the ones most of the span's samples carry.
    """
    rows = span_rows(store, Selection(service=service, since=since, until=until), span_id=span_id)
    if not rows:
        return None
    main = max(rows, key=lambda row: (row.sample_count, row.service))
    return SpanSummary(
        span_id=span_id,
        span_name=main.span_name,
        service=main.service,
        first_seen=min(row.first_seen for row in rows),
        last_seen=max(row.last_seen for row in rows),
        sample_count=sum(row.sample_count for row in rows),
        cpu_ns=sum(row.cpu_ns for row in rows),
    )


def span_rows(
    store: ProfileStore, selection: Selection, *, span_id: str | None = None
) -> list[SpanRow]:
    """Per span id and service in the window: its name, samples, CPU, first and last arrival.

    With ``selection.span_names``, only those names' samples count (an endpoint's spans);
    ``span_id`` keeps one span. Read from ``span_stats``; span ids and exclusions in
    ``selection`` are not looked at.
    """
    window, window_params = _window(selection)
    names = selection.span_names
    clauses: list[str] = []
    head: list[object] = []
    if span_id is not None:
        source = "span_stats ss CROSS JOIN profiles p ON p.id = ss.profile_id"
        clauses.append("ss.span_id = ?")
        head.append(span_id)
    else:
        source = "profiles p CROSS JOIN span_stats ss ON ss.profile_id = p.id"
    if names:
        clauses.append(f"ss.span_name IN ({_marks(names)})")
        head += names
    clauses.append(window)
    # Each sample once: all rows of the selected names, else the first = 1 row of each sample.
    weight = "1" if names else "ss.first"
    rows = _read(
        store,
        f"SELECT ss.span_id, p.service, ss.span_name, SUM(ss.count), SUM(ss.count * {weight}),"
        f" TOTAL(ss.count * {weight} * {_PERIOD_NS}), MIN(p.received_at), MAX(p.received_at)"
        f" FROM {source} WHERE {' AND '.join(clauses)}"
        " GROUP BY ss.span_id, p.service, ss.span_name",
        [*head, *window_params],
    )
    # One row per span, service and name; most spans have one name, so no Counter per span.
    merged: dict[tuple[str, str], list[Any]] = {}
    for span, service, name, name_count, count, cpu, first, last in rows:
        key = (span, service)
        entry = merged.get(key)
        if entry is None:
            merged[key] = [count, cpu, first, last, name or None, name_count if name else 0]
            continue
        entry[0] += count
        entry[1] += cpu
        entry[2] = min(entry[2], first)
        entry[3] = max(entry[3], last)
        # The name most samples carry, the smaller one on a tie.
        if name and (
            name_count > entry[5]
            or (name_count == entry[5] and (entry[4] is None or name < entry[4]))
        ):
            entry[4], entry[5] = name, name_count
    return [
        SpanRow(span, service, name, count, cpu, first, last)
        for (span, service), (count, cpu, first, last, name, _) in merged.items()
    ]


def has_samples(store: ProfileStore, selection: Selection) -> bool:
    """Whether any stored sample is selected."""
    sql, params = _sql(selection).query("1")
    return bool(_read(store, f"{sql} LIMIT 1", params))


def newest_arrival(store: ProfileStore) -> float | None:
    """Arrival time of the newest profile, ``None`` for an empty store."""
    value = _read(store, "SELECT MAX(received_at) FROM profiles", [])[0][0]
    return None if value is None else float(value)


def sample_rows(store: ProfileStore) -> int:
    """Number of stored sample rows."""
    return int(_read(store, "SELECT COUNT(*) FROM samples", [])[0][0])
