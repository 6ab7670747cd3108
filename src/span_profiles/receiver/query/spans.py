"""The span list of a selection, its endpoints, and one span's summary: one implementation each.

Spans are read from the per-span rollups, one row per span and service: ``span_totals`` (every
sample of a span once, and its last name) or, when the selection names span names,
``span_names`` (the samples carrying each name). A span seen entirely inside the window is read
from there as it is; the few spans that cross an edge of the window, and named span ids, are
summed from their per-profile ``span_stats`` rows inside the window, so every number is exact.

A span renamed while it ran (a bare method, then its route) is listed once, under its last name
(:func:`last_name`), in the command line, the web UI and the JSON API alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from span_profiles.receiver.model import CPU, seconds_key
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source, marks

__all__ = [
    "EndpointStat",
    "SpanOrder",
    "SpanStat",
    "endpoint_stats",
    "last_name",
    "per_request_key",
    "span_summary",
    "spans",
]

SpanOrder = Literal["newest", "nanos"]
"""How :func:`spans` ranks: most recently seen first, or most nanoseconds (CPU) first."""

_BATCH = 500
# A span's row: span_id, service, span_name ('' for none), count, nanos, first seen, last seen.
_Row = tuple[str, str, str, int, float, float, float]
_COLUMNS = "span_id, service, span_name, count, nanos, first_seen, last_seen"


@dataclass(frozen=True)
class SpanStat:
    """One span's samples within a selection."""

    span_id: str
    service: str
    span_name: str | None
    """Its last name (:func:`last_name`), ``None`` when no sample of it carries one."""
    sample_count: int
    nanos: float
    """Nanoseconds of its samples (CPU time for ``cpu``)."""
    first_seen: float
    """Arrival time (Unix seconds) of the first profile holding one of its samples."""
    last_seen: float
    """Arrival time of the newest profile holding one of its samples."""

    def to_json(self, profile_type: str = CPU) -> dict[str, Any]:
        """``{"span_id", "span_name", "service", "samples", "cpu_seconds", "first_seen",
        "last_seen"}``; the time is ``wall_seconds`` for ``profile_type="wall"``
        (:func:`~span_profiles.receiver.model.seconds_key`)."""
        return {
            "span_id": self.span_id,
            "span_name": self.span_name,
            "service": self.service,
            "samples": self.sample_count,
            seconds_key(profile_type): round(self.nanos / 1e9, 6),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class EndpointStat:
    """The spans of one service and span name within a selection (an overview row)."""

    service: str
    span_name: str | None
    requests: int
    """Distinct span ids."""
    sample_count: int
    nanos: float
    median_nanos: float
    """Per request (the mean of the two middle ones for an even count)."""
    p95_nanos: float
    """Per request, nearest rank: 95 % of the requests used at most this."""
    last_seen: float

    def to_json(self, profile_type: str = CPU) -> dict[str, Any]:
        """``{"service", "span_name", "requests", "samples", "cpu_seconds", "cpu_per_request":
        {"median", "p95"}, "last_seen"}``; ``wall_seconds`` and ``wall_per_request`` for
        ``profile_type="wall"``."""
        return {
            "service": self.service,
            "span_name": self.span_name,
            "requests": self.requests,
            "samples": self.sample_count,
            **self.times_json(profile_type),
            "last_seen": self.last_seen,
        }

    def times_json(self, profile_type: str = CPU) -> dict[str, Any]:
        """``{"cpu_seconds", "cpu_per_request": {"median", "p95"}}`` (named after
        ``profile_type``): the time keys of :meth:`to_json`."""
        return {
            seconds_key(profile_type): round(self.nanos / 1e9, 6),
            per_request_key(profile_type): {
                "median": round(self.median_nanos / 1e9, 6),
                "p95": round(self.p95_nanos / 1e9, 6),
            },
        }


def per_request_key(profile_type: str) -> str:
    """The key of a type's time per request in an endpoint row: ``cpu_per_request``, ..."""
    return f"{profile_type}_per_request"


def last_name(names: dict[str, tuple[float, int]]) -> str | None:
    """The name a span is listed under: the name of its newest upload, then the one with most
    samples, then the smaller; ``names`` maps each name to ``(last seen, samples)``.

    The writer applies the same rule to ``span_totals.span_name`` as profiles arrive.
    """
    if not names:
        return None
    return min(names.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[0]


def _stat(row: _Row) -> SpanStat:
    span_id, service, name, count, nanos, first_seen, last_seen = row
    return SpanStat(span_id, service, name or None, count, nanos, first_seen, last_seen)


# -- reading -------------------------------------------------------------------------------------


def _summed(
    source: Source, selection: Selection, span_ids: Sequence[str], by_name: bool
) -> list[_Row]:
    """The spans ``span_ids`` summed from their per-profile rows in the selection's window.

    ``by_name``: one row per span and selected name (as ``span_names`` has them), else one per
    span with its last name in the window (as ``span_totals``).
    """
    names = selection.span_names
    window, params = selection.profile_sql("p")
    name_sql = f" AND ss.span_name IN ({marks(names)})" if by_name else ""
    merged: dict[tuple[str, str, str], list[Any]] = {}
    named: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
    for start in range(0, len(span_ids), _BATCH):
        chunk = list(span_ids[start : start + _BATCH])
        for span_id, service, name, first, count, nanos, seen in source.fetch(
            "SELECT ss.span_id, p.service, ss.span_name, ss.first, ss.count, ss.nanos,"
            " p.received_at FROM span_stats ss CROSS JOIN profiles p ON p.id = ss.profile_id"
            f" WHERE ss.span_id IN ({marks(chunk)}) AND {window}{name_sql}",
            [*chunk, *params, *(names if by_name else ())],
        ):
            if not by_name:
                if name:
                    was_seen, was_count = named.setdefault((span_id, service), {}).get(
                        name, (seen, 0)
                    )
                    named[span_id, service][name] = (max(was_seen, seen), was_count + count)
                if not first:
                    continue
            key = (span_id, service, name if by_name else "")
            entry = merged.get(key)
            if entry is None:
                merged[key] = [count, nanos, seen, seen]
                continue
            entry[0] += count
            entry[1] += nanos
            entry[2] = min(entry[2], seen)
            entry[3] = max(entry[3], seen)
    rows: list[_Row] = []
    for (span_id, service, name), (count, nanos, first_seen, last_seen) in merged.items():
        if not by_name:
            name = last_name(named.get((span_id, service), {})) or ""
        rows.append((span_id, service, name, count, nanos, first_seen, last_seen))
    return rows


def _table(selection: Selection) -> tuple[str, str, list[object]]:
    """The per-span rollup a selection reads, and its conditions (without the window)."""
    names = selection.span_names
    clauses = ["profile_type = ?"]
    params: list[object] = [selection.profile_type]
    if names:
        clauses.append(f"span_name IN ({marks(names)})")
        params += names
    if selection.service is not None:
        clauses.append("service = ?")
        params.append(selection.service)
    return ("span_names" if names else "span_totals"), " AND ".join(clauses), params


def _inside(selection: Selection) -> tuple[str, str, list[object]]:
    """``FROM`` table, ``WHERE`` and parameters of the spans seen entirely inside the window."""
    table, where, params = _table(selection)
    if selection.since is not None:
        where += " AND last_seen >= ? AND first_seen >= ?"
        params += [selection.since, selection.since]
    if selection.until is not None:
        where += " AND last_seen <= ?"
        params.append(selection.until)
    return table, where, params


def _crossing(source: Source, selection: Selection) -> list[_Row]:
    """The spans that cross an edge of the window, summed inside it."""
    table, where, params = _table(selection)
    span_ids: set[str] = set()
    if selection.since is not None:
        span_ids.update(
            row[0]
            for row in source.fetch(
                f"SELECT span_id FROM {table} WHERE {where} AND last_seen >= ? AND first_seen < ?"
                + (" AND first_seen <= ?" if selection.until is not None else ""),
                [*params, selection.since, selection.since]
                + ([selection.until] if selection.until is not None else []),
            )
        )
    if selection.until is not None:
        span_ids.update(
            row[0]
            for row in source.fetch(
                f"SELECT span_id FROM {table} WHERE {where} AND last_seen > ? AND first_seen <= ?",
                [*params, selection.until, selection.until],
            )
        )
    if not span_ids:
        return []
    return _summed(source, selection, sorted(span_ids), bool(selection.span_names))


def _merge_names(rows: Iterable[_Row]) -> list[_Row]:
    """One row per span and service from rows per selected name (samples of each name summed)."""
    merged: dict[tuple[str, str], list[Any]] = {}
    for span_id, service, name, count, nanos, first_seen, last_seen in rows:
        entry = merged.get((span_id, service))
        if entry is None:
            merged[span_id, service] = [
                count,
                nanos,
                first_seen,
                last_seen,
                {name: (last_seen, count)},
            ]
            continue
        entry[0] += count
        entry[1] += nanos
        entry[2] = min(entry[2], first_seen)
        entry[3] = max(entry[3], last_seen)
        entry[4][name] = (last_seen, count)
    return [
        (span_id, service, last_name(names) or "", count, nanos, first_seen, last_seen)
        for (span_id, service), (count, nanos, first_seen, last_seen, names) in merged.items()
    ]


def _rows(
    source: Source, selection: Selection, *, order_by: str = "", limit: int | None = None
) -> list[_Row]:
    """The selection's span rows; with ``order_by``/``limit`` at least the first ``limit`` of the
    spans inside the window in that order, and every span crossing its edges."""
    by_name = bool(selection.span_names)
    if selection.span_ids:
        rows = _summed(source, selection, selection.span_ids, by_name)
    else:
        table, where, params = _inside(selection)
        tail = f" ORDER BY {order_by}" if order_by else ""
        # Several selected names give a span several rows: take them all before ranking.
        if limit is not None and len(selection.span_names) <= 1:
            tail += " LIMIT ?"
            params.append(limit)
        rows = source.fetch(f"SELECT {_COLUMNS} FROM {table} WHERE {where}{tail}", params)
        rows += _crossing(source, selection)
    if len(selection.span_names) > 1:
        rows = _merge_names(rows)
    excluded = set(selection.exclude_span_ids)
    return [row for row in rows if row[3] > 0 and row[0] not in excluded]


# -- the one span list ---------------------------------------------------------------------------


def spans(
    source: Source, selection: Selection, *, limit: int | None = None, order: SpanOrder = "newest"
) -> list[SpanStat]:
    """The selection's spans, ranked: ``"newest"`` by last seen (then samples, span id),
    ``"nanos"`` by nanoseconds (then span id); the first ``limit`` (all when ``None``).

    With ``span_names`` only those names' samples count (with several, a sample carrying two of
    them counts under each: span-profiles labels a sample with one name, naive agents may not);
    with ``span_ids`` only those spans; ``exclude_span_ids`` leaves spans out.
    """
    if order == "newest":
        order_by = "last_seen DESC, count DESC, span_id, service"

        def key(row: _Row) -> tuple[Any, ...]:
            return (-row[6], -row[3], row[0], row[1])
    else:
        order_by = "nanos DESC, span_id, service"

        def key(row: _Row) -> tuple[Any, ...]:
            return (-row[4], row[0], row[1])

    extra = len(selection.exclude_span_ids)
    rows = _rows(
        source, selection, order_by=order_by, limit=None if limit is None else limit + extra
    )
    rows.sort(key=key)
    return [_stat(row) for row in (rows if limit is None else rows[: max(limit, 0)])]


def span_summary(source: Source, selection: Selection, span_id: str) -> SpanStat | None:
    """One span across services in the selection's window; ``None`` when it has no samples.

    Its service is the one most of its samples carry; its name is its :func:`last_name` over all.
    """
    rows = _rows(
        source, replace(selection, span_ids=(span_id,), span_names=(), exclude_span_ids=())
    )
    if not rows:
        return None
    if len(rows) == 1:
        return _stat(rows[0])
    service = max(rows, key=lambda row: (row[3], row[1]))[1]
    # The name over every service: that of the newest row that has one.
    named = [row for row in rows if row[2]]
    name = max(named, key=lambda row: (row[6], row[3], row[2]))[2] if named else ""
    return SpanStat(
        span_id=span_id,
        service=service,
        span_name=name or None,
        sample_count=sum(row[3] for row in rows),
        nanos=sum(row[4] for row in rows),
        first_seen=min(row[5] for row in rows),
        last_seen=max(row[6] for row in rows),
    )


# -- endpoints -----------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    # Nearest rank: the value below which `fraction` of the requests lie.
    if not sorted_values:
        return 0.0
    return float(sorted_values[max(math.ceil(fraction * len(sorted_values)) - 1, 0)])


def endpoint_stats(source: Source, selection: Selection) -> list[EndpointStat]:
    """Per service and span name (each span under its last name): requests, samples, time, the
    median and p95 per request, last seen; most nanoseconds first."""
    # Per endpoint: [nanos per request], samples, last seen.
    groups: dict[tuple[str, str], list[Any]] = {}
    crossing: list[_Row]
    if selection.span_ids or selection.exclude_span_ids or len(selection.span_names) > 1:
        crossing = _rows(source, selection)
    else:
        # The spans inside the window, grouped by SQLite: no row per span reaches Python.
        table, where, params = _inside(selection)
        for service, name, count, last_seen, values in source.fetch(
            "SELECT service, span_name, SUM(count), MAX(last_seen), group_concat(nanos)"
            f" FROM {table} WHERE {where} GROUP BY service, span_name",
            params,
        ):
            groups[service, name] = [list(map(float, values.split(","))), count, last_seen]
        crossing = _crossing(source, selection)
    for _, service, name, count, nanos, _, last_seen in crossing:
        group = groups.get((service, name))
        if group is None:
            groups[service, name] = [[nanos], count, last_seen]
            continue
        group[0].append(nanos)
        group[1] += count
        group[2] = max(group[2], last_seen)
    result = []
    for (service, name), (values, count, last_seen) in groups.items():
        values.sort()
        result.append(
            EndpointStat(
                service=service,
                span_name=name or None,
                requests=len(values),
                sample_count=count,
                nanos=sum(values),
                median_nanos=statistics.median(values),
                p95_nanos=_percentile(values, 0.95),
                last_seen=last_seen,
            )
        )
    result.sort(key=lambda e: (-e.nanos, e.service, e.span_name or ""))
    return result
