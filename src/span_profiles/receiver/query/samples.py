"""The stored samples of a selection, one by one, with their labels and context (for exports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from span_profiles.receiver.model import nanos_of
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source, selected_samples

__all__ = ["StoredSample", "has_samples", "iter_samples"]

_BATCH = 1000


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
    nanos: int
    """The sample's weight in nanoseconds (CPU time for ``cpu``, wall-clock time for ``wall``)."""
    period: int
    """The profile's sampling period (10 ms in nanoseconds at the agent's 100 Hz)."""
    profile_type: str
    """``cpu``, ``wall``, ..."""

    def label_values(self, key: str) -> tuple[str, ...]:
        """All values of sample label ``key``, in order (empty when absent)."""
        return tuple(value for name, value in self.labels if name == key)


def iter_samples(source: Source, selection: Selection) -> Iterator[StoredSample]:
    """Every selected sample with its labels, in arrival order, fetched in batches."""
    where, params = selected_samples(selection, joins="CROSS JOIN stacks st ON st.id = s.stack_id")
    sql = (
        "SELECT s.id, s.labels, st.functions, st.files, s.count, p.service, p.received_at,"
        " s.value, p.series_labels, p.sample_unit, p.period_unit, p.period, p.profile_type"
        f" FROM {where} AND s.id > ? ORDER BY s.id LIMIT ?"
    )
    last_id = 0
    while True:
        # Batches keyed on the rowid, so no cursor stays open across a yield.
        rows = source.fetch(sql, [*params, last_id, _BATCH])
        if not rows:
            return
        last_id = int(rows[-1][0])
        for row in rows:
            _, labels, functions, files, count, service, received_at, value, series = row[:9]
            unit, period_unit, period, profile_type = row[9:]
            yield StoredSample(
                labels=tuple((k, v) for k, v in json.loads(labels)),
                functions=tuple(json.loads(functions)),
                files=tuple(json.loads(files)),
                count=count,
                service=service,
                received_at=received_at,
                value=value,
                series_labels=tuple((k, v) for k, v in json.loads(series)),
                nanos=nanos_of(value, count, unit, period_unit, period),
                period=period,
                profile_type=profile_type,
            )


def has_samples(source: Source, selection: Selection) -> bool:
    """Whether any stored sample is selected."""
    where, params = selected_samples(selection)
    return bool(source.fetch(f"SELECT 1 FROM {where} LIMIT 1", params))
