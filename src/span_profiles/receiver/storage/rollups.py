"""The rollups: aggregates written with every profile, so that no view scans the samples.

Per profile, the exact source for any window and for one span:

* ``span_stats``: per span id and span name, the samples and nanoseconds carrying both;
* ``name_stacks``: per span name and stack, the samples and nanoseconds.

Per span, over all its profiles (what a window's spans are read from: one row per span, so that
the whole store's overview reads each span once, with no grouping):

* ``span_totals``: its samples and nanoseconds (each sample once), first and last arrival, and its
  last name, the one name every view lists it under (the name of its newest upload, then the one
  with most samples, then the smaller);
* ``span_names``: the same per span name it carried.

Per hour, profile type and service (what a window's whole hours of stacks are read from):

* ``name_stacks_hourly``: the ``name_stacks`` rows of that hour, summed.

The writer adds to these as profiles arrive (:func:`add_profile`). Retention rebuilds what its
deletions touched from the per-profile rows that are left (:func:`mark_touched`, then
:func:`rebuild_touched`), so every rollup always equals the sum of the profiles it covers;
migrations rebuild everything (:func:`rebuild_all`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from span_profiles.receiver.storage.schema import HOUR

__all__ = [
    "NameStackKey",
    "SpanKey",
    "add_profile",
    "mark_touched",
    "rebuild_all",
    "rebuild_touched",
]

SpanKey = tuple[str, str, int]
"""``(span_id, span_name, first)`` of a ``span_stats`` row."""
NameStackKey = tuple[str, int, int]
"""``(span_name, stack_id, first)`` of a ``name_stacks`` row."""

# The last name of the span_totals row: of its newest upload, then most samples, then smaller.
_NAME_OF_ROW = """
COALESCE((SELECT n.span_name FROM span_names n WHERE n.profile_type = span_totals.profile_type
          AND n.service = span_totals.service AND n.span_id = span_totals.span_id
          ORDER BY n.last_seen DESC, n.count DESC, n.span_name LIMIT 1), '')
"""
_LAST_NAME = f"UPDATE span_totals SET span_name = {_NAME_OF_ROW}"

# Rebuilds from the per-profile rows of the profiles {source} joins in (as p, with span_stats ss).
_REBUILD_SPANS = """
INSERT INTO span_names (profile_type, service, span_id, span_name, count, nanos, first_seen,
                        last_seen)
SELECT p.profile_type, p.service, ss.span_id, ss.span_name, SUM(ss.count), SUM(ss.nanos),
       MIN(p.received_at), MAX(p.received_at)
FROM {source} WHERE ss.span_name != '' GROUP BY 1, 2, 3, 4;
INSERT INTO span_totals (profile_type, service, span_id, span_name, count, nanos, first_seen,
                         last_seen)
SELECT p.profile_type, p.service, ss.span_id, '', SUM(ss.count * ss.first),
       SUM(ss.nanos * ss.first), MIN(p.received_at), MAX(p.received_at)
FROM {source} GROUP BY 1, 2, 3
"""
_REBUILD_STACKS = f"""
INSERT INTO name_stacks_hourly (profile_type, span_name, hour, service, stack_id, first, count,
                                nanos)
SELECT p.profile_type, ns.span_name, CAST(p.received_at / {HOUR} AS INTEGER), p.service,
       ns.stack_id, ns.first, SUM(ns.count), SUM(ns.nanos)
FROM profiles p CROSS JOIN name_stacks ns ON ns.profile_id = p.id
WHERE {{where}} GROUP BY 1, 2, 3, 4, 5, 6
"""


def add_profile(
    cursor: sqlite3.Cursor,
    profile_id: int,
    profile_type: str,
    service: str,
    received_at: float,
    spans: Mapping[SpanKey, tuple[int, float]],
    stacks: Mapping[NameStackKey, tuple[int, float]],
) -> None:
    """Write one profile's rows and add them to the span and hourly rollups.

    ``spans`` and ``stacks`` map each ``span_stats`` and ``name_stacks`` key to
    ``(count, nanos)``.
    """
    cursor.executemany(
        "INSERT INTO span_stats (profile_id, span_id, span_name, first, count, nanos)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(profile_id, *key, *value) for key, value in spans.items()],
    )
    cursor.executemany(
        "INSERT INTO name_stacks (profile_id, span_name, stack_id, first, count, nanos)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(profile_id, *key, *value) for key, value in stacks.items()],
    )
    key = (profile_type, service)
    seen = (received_at, received_at)
    cursor.executemany(
        "INSERT INTO span_names (profile_type, service, span_id, span_name, count, nanos,"
        " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET count = count + excluded.count,"
        " nanos = nanos + excluded.nanos, first_seen = MIN(first_seen, excluded.first_seen),"
        " last_seen = MAX(last_seen, excluded.last_seen)",
        [(*key, span, name, *value, *seen) for (span, name, _), value in spans.items() if name],
    )
    # The names each span carries in this profile; its last name is one of them, or unchanged.
    names: dict[str, list[str]] = {}
    for span, name, _ in spans:
        names.setdefault(span, [])
        if name:
            names[span].append(name)
    # Each sample once: its first = 1 row; every span of the profile is in one. A span that
    # carries one name here, in a profile newer than its last, takes that name without a lookup.
    cursor.executemany(
        "INSERT INTO span_totals (profile_type, service, span_id, span_name, count, nanos,"
        " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET count = count + excluded.count,"
        " nanos = nanos + excluded.nanos, first_seen = MIN(first_seen, excluded.first_seen),"
        " last_seen = MAX(last_seen, excluded.last_seen), span_name = CASE"
        " WHEN excluded.span_name = '' THEN span_name"
        " WHEN excluded.last_seen > last_seen THEN excluded.span_name"
        f" ELSE ({_NAME_OF_ROW}) END",
        [
            (*key, span, names[span][0] if len(names[span]) == 1 else "", *value, *seen)
            for (span, _, first), value in spans.items()
            if first
        ],
    )
    # Several names in one profile (a naive agent's samples): the rule decides, from span_names.
    cursor.executemany(
        f"{_LAST_NAME} WHERE profile_type = ? AND service = ? AND span_id = ?",
        [(*key, span) for span, carried in names.items() if len(carried) > 1],
    )
    hour = int(received_at // HOUR)
    cursor.executemany(
        "INSERT INTO name_stacks_hourly (profile_type, span_name, hour, service, stack_id, first,"
        " count, nanos) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET count = count + excluded.count, nanos = nanos + excluded.nanos",
        [
            (profile_type, name, hour, service, stack, first, count, nanos)
            for (name, stack, first), (count, nanos) in stacks.items()
        ],
    )


def _run(cursor: sqlite3.Cursor, script: str, params: tuple[object, ...] = ()) -> None:
    for statement in script.split(";"):
        if statement.strip():
            cursor.execute(statement, params)


def rebuild_all(cursor: sqlite3.Cursor) -> None:
    """Recompute the span and hourly rollups from every per-profile row (migrations)."""
    for table in ("span_names", "span_totals", "name_stacks_hourly"):
        cursor.execute(f"DELETE FROM {table}")
    _run(
        cursor,
        _REBUILD_SPANS.format(source="profiles p CROSS JOIN span_stats ss ON ss.profile_id = p.id"),
    )
    cursor.execute(_LAST_NAME)
    cursor.execute(_REBUILD_STACKS.format(where="1"))


def mark_touched(cursor: sqlite3.Cursor, doomed: str, params: tuple[object, ...]) -> None:
    """Note the spans and hours the profiles ``doomed`` selects (``SELECT id FROM profiles ...``
    with ``params``) are part of; call before deleting them, then :func:`rebuild_touched`."""
    cursor.execute("DROP TABLE IF EXISTS temp.touched_spans")
    cursor.execute("DROP TABLE IF EXISTS temp.touched_hours")
    cursor.execute(
        "CREATE TEMP TABLE touched_spans AS SELECT DISTINCT p.profile_type, p.service, ss.span_id"
        " FROM profiles p CROSS JOIN span_stats ss ON ss.profile_id = p.id"
        f" WHERE p.id IN ({doomed})",
        params,
    )
    cursor.execute(
        "CREATE TEMP TABLE touched_hours AS SELECT DISTINCT profile_type,"
        f" CAST(received_at / {HOUR} AS INTEGER) AS hour FROM profiles WHERE id IN ({doomed})",
        params,
    )


def rebuild_touched(cursor: sqlite3.Cursor) -> None:
    """Recompute what :func:`mark_touched` noted, from the per-profile rows left."""
    keys = "(profile_type, service, span_id) IN (SELECT * FROM temp.touched_spans)"
    cursor.execute(f"DELETE FROM span_names WHERE {keys}")
    cursor.execute(f"DELETE FROM span_totals WHERE {keys}")
    source = (
        "temp.touched_spans t CROSS JOIN span_stats ss ON ss.span_id = t.span_id"
        " CROSS JOIN profiles p ON p.id = ss.profile_id AND p.profile_type = t.profile_type"
        " AND p.service = t.service"
    )
    _run(cursor, _REBUILD_SPANS.format(source=source))
    cursor.execute(f"{_LAST_NAME} WHERE {keys}")
    for profile_type, hour in cursor.execute("SELECT * FROM temp.touched_hours").fetchall():
        cursor.execute(
            "DELETE FROM name_stacks_hourly WHERE profile_type = ? AND hour = ?",
            (profile_type, hour),
        )
        cursor.execute(
            _REBUILD_STACKS.format(
                where="p.profile_type = ? AND p.received_at >= ? AND p.received_at < ?"
            ),
            (profile_type, hour * HOUR, (hour + 1) * HOUR),
        )
    cursor.execute("DROP TABLE temp.touched_spans")
    cursor.execute("DROP TABLE temp.touched_hours")
