"""SQL the queries share: what they read through, and how selected samples are found.

What reads what, so that no view scans the samples table:

* a window's spans (the overview, an endpoint's spans, the span list): ``span_stats_hourly`` for
  its whole hours, ``span_stats`` for the partial hours at its edges;
* a window's or a span name's stacks: ``name_stacks_hourly`` and ``name_stacks`` the same way;
* one span's summary: its ``span_stats`` rows (index on ``span_id``);
* one span's stacks and the samples themselves (exports): its samples, found through the
  ``sample_labels(key, value)`` index, so the cost follows the span, not the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from span_profiles.receiver.model import SPAN_ID_LABEL, SPAN_NAME_LABEL
from span_profiles.receiver.query.selection import Selection

__all__ = ["Source", "marks", "newest_arrival", "selected_samples"]


class Source(Protocol):
    """Where queries read (a :class:`~span_profiles.receiver.query.reader.ProfileReader`)."""

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read-only SQL statement."""
        ...


def marks(values: Sequence[object]) -> str:
    """``?, ?, ...``: one placeholder per value."""
    return ", ".join("?" for _ in values)


def selected_samples(
    selection: Selection,
    *,
    require_names: tuple[str, ...] = (),
    forbid_names: tuple[str, ...] = (),
    joins: str = "",
) -> tuple[str, list[object]]:
    """``... WHERE ...`` (samples ``s``, profiles ``p``, then ``joins``) for ``SELECT ... FROM``.

    ``require_names``/``forbid_names`` keep only the samples that do/don't carry one of these
    span names. A selection of span ids or names is driven from the ``(key, value, sample_id)``
    label index, a window from the arrival index; ``CROSS JOIN`` keeps that order.
    """
    source_params: list[object] = []
    source = "profiles p CROSS JOIN samples s ON s.profile_id = p.id"
    keys: list[str] = []
    for key, values in (
        (SPAN_ID_LABEL, selection.span_ids),
        (SPAN_NAME_LABEL, selection.span_names),
    ):
        if values:
            keys.append(f"(key = ? AND value IN ({marks(values)}))")
            source_params += [key, *values]
    if keys:
        source = (
            f"(SELECT DISTINCT sample_id FROM sample_labels WHERE {' OR '.join(keys)}) m"
            " CROSS JOIN samples s ON s.id = m.sample_id"
            " CROSS JOIN profiles p ON p.id = s.profile_id"
        )
    window, params = selection.profile_sql("p")
    clauses = [window]
    if selection.exclude_span_ids:
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM sample_labels x WHERE x.sample_id = s.id"
            f" AND x.key = ? AND x.value IN ({marks(selection.exclude_span_ids)}))"
        )
        params += [SPAN_ID_LABEL, *selection.exclude_span_ids]
    for test, names in (("EXISTS", require_names), ("NOT EXISTS", forbid_names)):
        if names:
            clauses.append(
                f"{test} (SELECT 1 FROM sample_labels y WHERE y.sample_id = s.id"
                f" AND y.key = ? AND y.value IN ({marks(names)}))"
            )
            params += [SPAN_NAME_LABEL, *names]
    return f"{source} {joins} WHERE {' AND '.join(clauses)}", [*source_params, *params]


def newest_arrival(source: Source, profile_type: str) -> float | None:
    """Arrival time of the newest profile of ``profile_type``, ``None`` when there is none."""
    value = source.fetch(
        "SELECT MAX(received_at) FROM profiles WHERE profile_type = ?", (profile_type,)
    )[0][0]
    return None if value is None else float(value)
