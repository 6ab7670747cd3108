"""Read-only SQL for the views: stacks of a selection, one span's summary, the overview.

The views (flame graphs, diffs, exports, the web UI) need queries the store's row-by-row API does
not have: stacks aggregated in SQL, a union of span ids and span names, "the other spans of this
name". They all live here, against the store's schema, so that a schema change touches one file.
Every function only reads; it takes the store's lock like the store's own queries do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from span_profiles.receiver.model import SPAN_ID_LABEL, SPAN_NAME_LABEL
from span_profiles.receiver.store import ProfileStore

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


@dataclass(frozen=True)
class SpanRow:
    """One span's totals within a selection (a row of the overview and of an endpoint's spans)."""

    span_id: str
    service: str
    span_name: str | None
    """The ``span_name`` most of its samples carry, ``None`` if none carries one."""
    sample_count: int
    cpu_ns: float
    first_seen: float
    last_seen: float


def _sql(selection: Selection) -> _Sql:
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
    clauses = ["1"]
    params: list[object] = []
    if selection.service is not None:
        clauses.append("p.service = ?")
        params.append(selection.service)
    if selection.since is not None:
        clauses.append("p.received_at >= ?")
        params.append(selection.since)
    if selection.until is not None:
        clauses.append("p.received_at <= ?")
        params.append(selection.until)
    if selection.exclude_span_ids:
        marks = ", ".join("?" for _ in selection.exclude_span_ids)
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM sample_labels x WHERE x.sample_id = s.id"
            f" AND x.key = ? AND x.value IN ({marks}))"
        )
        params += [SPAN_ID_LABEL, *selection.exclude_span_ids]
    return _Sql(source, source_params, " AND ".join(clauses), params)


def _read(store: ProfileStore, sql: str, params: list[object]) -> list[Any]:
    # The store serialises its connection with this lock; the views share the store's connection.
    with store._lock:
        rows: list[Any] = store._db.execute(sql, params).fetchall()
    return rows


def stack_counts(store: ProfileStore, selection: Selection) -> list[StackCount]:
    """The selected samples grouped by stack, most samples first (ties by stack)."""
    inner, params = _sql(selection).query(
        f"s.stack_id AS stack_id, SUM(s.count) AS n, TOTAL({_CPU_NS}) AS cpu"
    )
    rows = _read(
        store,
        "SELECT st.functions, st.files, g.n, g.cpu"
        f" FROM ({inner} GROUP BY s.stack_id) g JOIN stacks st ON st.id = g.stack_id",
        params,
    )
    result = [
        StackCount(
            functions=tuple(json.loads(functions)),
            files=tuple(json.loads(files)),
            count=int(count),
            cpu_ns=float(cpu),
        )
        for functions, files, count, cpu in rows
    ]
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
    parts = _sql(Selection(service=service, since=since, until=until, span_ids=(span_id,)))
    row = _read(
        store,
        *parts.query(f"MIN(p.received_at), MAX(p.received_at), SUM(s.count), TOTAL({_CPU_NS})"),
    )[0]
    if row[0] is None:
        return None
    sql, params = parts.query("s.labels, SUM(s.count)")
    names: Counter[str] = Counter()
    for labels, count in _read(store, f"{sql} GROUP BY s.labels", params):
        name = _label_values(labels)[1]
        if name is not None:
            names[name] += count
    sql, params = parts.query("p.service, SUM(s.count) AS c")
    services = _read(store, f"{sql} GROUP BY p.service ORDER BY c DESC LIMIT 1", params)
    return SpanSummary(
        span_id=span_id,
        span_name=_most_common(names),
        service=str(services[0][0]) if services else None,
        first_seen=float(row[0]),
        last_seen=float(row[1]),
        sample_count=int(row[2]),
        cpu_ns=float(row[3]),
    )


def _label_values(labels_json: str) -> tuple[list[str], str | None]:
    """The span ids and the first span name in a stored sample's label list."""
    span_ids: list[str] = []
    name: str | None = None
    for key, value in json.loads(labels_json):
        if key == SPAN_ID_LABEL:
            span_ids.append(value)
        elif key == SPAN_NAME_LABEL and name is None:
            name = value
    return span_ids, name


def span_rows(store: ProfileStore, selection: Selection) -> list[SpanRow]:
    """Per span id (and service) among the selected samples: name, samples, CPU, first and last
    arrival. A sample carrying several span ids counts for each.

    Grouped by the samples' stored label lists, which are few (about one per span) and carry
    both the span id and the name, so no label table is joined.
    """
    sql, params = _sql(selection).query(
        f"s.labels, p.service, SUM(s.count), TOTAL({_CPU_NS}), MIN(p.received_at),"
        " MAX(p.received_at)"
    )
    merged: dict[tuple[str, str], list[Any]] = {}
    names: dict[tuple[str, str], Counter[str]] = {}
    for labels, service, count, cpu, first, last in _read(
        store, f"{sql} GROUP BY s.labels, p.service", params
    ):
        span_ids, name = _label_values(labels)
        for span_id in dict.fromkeys(span_ids):
            key = (span_id, service)
            row = merged.get(key)
            if row is None:
                merged[key] = [count, cpu, first, last]
            else:
                row[0] += count
                row[1] += cpu
                row[2] = min(row[2], first)
                row[3] = max(row[3], last)
            if name is not None:
                names.setdefault(key, Counter())[name] += count
    return [
        SpanRow(
            span_id=span_id,
            service=service,
            span_name=_most_common(names.get((span_id, service))),
            sample_count=count,
            cpu_ns=cpu,
            first_seen=first,
            last_seen=last,
        )
        for (span_id, service), (count, cpu, first, last) in merged.items()
    ]


def _most_common(counter: Counter[str] | None) -> str | None:
    # Most samples first, then the smaller name, so the choice is stable.
    if not counter:
        return None
    return min(counter.items(), key=lambda item: (-item[1], item[0]))[0]


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
