"""Which stored samples a query looks at: one :class:`Selection` for every view and command.

A window (``since``, ``until``) is read from the hourly rollups for its whole hours
(:meth:`Selection.rollup_sql`) and from the per-profile rows for the partial hours at its edges
(:meth:`Selection.edge_sql`), so the cost of a query follows the number of hours in it, not of
uploads.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime

from span_profiles.receiver.model import CPU, VIEW_TYPES
from span_profiles.receiver.storage.schema import HOUR

__all__ = ["Selection", "parse_age", "parse_profile_type", "parse_time"]

_AGE_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd]?)$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds from an age (``90``, ``90s``, ``15m``, ``2h``, ``1d``: that long before
    ``now``) or an ISO 8601 time (local time unless it carries an offset).

    Raises:
        ValueError: ``text`` is neither; the message says what is accepted.
    """
    match = _AGE_RE.fullmatch(text.strip())
    if match is not None:
        now = time.time() if now is None else now
        return now - float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    iso = text.strip()
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an age (90, 15m, 2h, 1d) nor an ISO 8601 time"
        ) from None


def parse_age(text: str) -> float:
    """Seconds from an age (``90``, ``90s``, ``15m``, ``2h``, ``7d``); raises :class:`ValueError`."""
    match = _AGE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an age (90, 15m, 2h, 7d)")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def parse_profile_type(text: str) -> str:
    """A profile type the views offer (:data:`~span_profiles.receiver.model.VIEW_TYPES`).

    Raises:
        ValueError: ``text`` names no such type; the message lists them.
    """
    if text not in VIEW_TYPES:
        raise ValueError(f"unknown profile type {text!r}: use one of {', '.join(VIEW_TYPES)}")
    return text


@dataclass(frozen=True)
class Selection:
    """Which stored samples a query looks at.

    A sample is selected when its profile has type ``profile_type``, arrived in ``[since, until]``
    (Unix seconds, inclusive, ``None`` = open) and belongs to ``service`` (if given), when it
    carries one of ``span_ids`` or ``span_names`` (if either is given; a sample matching several is
    selected once) and none of ``exclude_span_ids``.
    """

    service: str | None = None
    since: float | None = None
    until: float | None = None
    span_ids: tuple[str, ...] = ()
    span_names: tuple[str, ...] = ()
    exclude_span_ids: tuple[str, ...] = ()
    profile_type: str = CPU
    """``cpu`` (the default), ``wall``, ...: see :data:`~span_profiles.receiver.model.PROFILE_TYPES`."""

    def describe(self) -> str:
        """A short human description, e.g. ``span_id 8d1510b9974d53af``."""
        parts = [f"span_id {span_id}" for span_id in self.span_ids]
        parts += [f"span_name {name!r}" for name in self.span_names]
        text = " or ".join(parts) or "all samples"
        if self.exclude_span_ids:
            text += " except span_id " + ", ".join(self.exclude_span_ids)
        if self.service is not None:
            text += f" of service {self.service!r}"
        if self.profile_type != CPU:
            text += f" ({self.profile_type})"
        return text

    def profile_sql(self, alias: str = "p") -> tuple[str, list[object]]:
        """SQL conditions on the profiles table (as ``alias``) for the type, service and window."""
        clauses = [f"{alias}.profile_type = ?"]
        params: list[object] = [self.profile_type]
        for clause, value in (
            (f"{alias}.service = ?", self.service),
            (f"{alias}.received_at >= ?", self.since),
            (f"{alias}.received_at <= ?", self.until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params

    def rollup_sql(self, alias: str = "h") -> tuple[str, list[object]] | None:
        """Conditions on an hourly rollup (as ``alias``) for the window's whole hours.

        ``None`` when the window holds no whole hour. Together with :meth:`edge_sql` it covers the
        window exactly once.
        """
        lo, hi = self._whole_hours()
        if lo > hi:
            return None
        clauses = [f"{alias}.profile_type = ?"]
        params: list[object] = [self.profile_type]
        for clause, value in ((f"{alias}.hour >= ?", lo), (f"{alias}.hour <= ?", hi)):
            if math.isfinite(value):
                clauses.append(clause)
                params.append(int(value))
        if self.service is not None:
            clauses.append(f"{alias}.service = ?")
            params.append(self.service)
        return " AND ".join(clauses), params

    def edge_sql(self, alias: str = "p") -> tuple[str, list[object]] | None:
        """Conditions on the profiles table (as ``alias``) for the window outside its whole hours.

        ``None`` when the whole hours cover the window (no ``since`` or ``until`` cuts an hour).
        """
        sql, params = self.profile_sql(alias)
        lo, hi = self._whole_hours()
        if lo > hi:
            return sql, params
        edges = []
        if math.isfinite(lo):
            edges.append(f"{alias}.received_at < ?")
            params.append(lo * HOUR)
        if math.isfinite(hi):
            edges.append(f"{alias}.received_at >= ?")
            params.append((hi + 1) * HOUR)
        if not edges:
            return None
        return f"{sql} AND ({' OR '.join(edges)})", params

    def _whole_hours(self) -> tuple[float, float]:
        lo = -math.inf if self.since is None else math.ceil(self.since / HOUR)
        # `until` is inclusive: hour h is whole when (h + 1) * HOUR <= until.
        hi = math.inf if self.until is None else math.floor(self.until / HOUR) - 1
        return lo, hi
