"""What the receiver holds, whatever stage it is in: profiles, samples, series and their labels.

Ingest decodes uploads into these types, storage writes them, and the query side names its
results after them. Pure Python (no protobuf), so that storing and querying work without the
``receiver`` extra.

The profile type (``cpu``, ``wall``, ...) is part of the data: each series names its type in its
``__name__`` label (:func:`profile_type_of`), and every stored profile keeps it, so that a second
type is a value to select, not a copy of the code. Every type's samples carry a weight in
nanoseconds (:meth:`Profile.nanos_of`): CPU time for ``cpu``, wall-clock time for ``wall``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CPU",
    "LEGACY_PROFILE_ID_LABEL",
    "NAME_LABEL",
    "PROFILE_TYPES",
    "SERVICE_NAME_LABEL",
    "SPAN_ID_LABEL",
    "SPAN_ID_RE",
    "SPAN_NAME_LABEL",
    "UNKNOWN_SERVICE",
    "VIEW_TYPES",
    "WALL",
    "Labels",
    "Profile",
    "Sample",
    "Series",
    "check_span_id",
    "nanos_of",
    "normalize_sample_labels",
    "profile_type_of",
    "seconds_key",
    "service_of",
]

SERVICE_NAME_LABEL = "service_name"
"""The series label naming the service (OpenTelemetry's ``service.name``)."""
NAME_LABEL = "__name__"
"""The series label naming the profile type, e.g. ``process_cpu`` or ``wall``."""
SPAN_ID_LABEL = "span_id"
SPAN_NAME_LABEL = "span_name"
LEGACY_PROFILE_ID_LABEL = "profile_id"
"""Pyroscope renames this legacy sample label to ``span_id``."""
UNKNOWN_SERVICE = "unknown_service"
"""What a series without a ``service_name`` label is stored under (Pyroscope does the same)."""

CPU = "cpu"
"""The profile type of on-CPU samples (``__name__=process_cpu``), the default everywhere."""
WALL = "wall"
"""The profile type of wall-clock samples (``__name__=wall``), weighted by nanoseconds."""
PROFILE_TYPES = {"process_cpu": CPU, "wall": WALL}
"""``__name__`` series label -> stored profile type; another name is stored as it is."""
VIEW_TYPES = (CPU, WALL)
"""The profile types the views offer (``--type``, ``?type=``), in the order pages show them."""

SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
"""An OpenTelemetry span id as Grafana links it: 16 lowercase hex characters."""

Labels = tuple[tuple[str, str], ...]
_NANOSECONDS = "nanoseconds"


@dataclass(frozen=True)
class Sample:
    """One pprof sample, resolved: stack frames leaf first and string labels in wire order."""

    values: tuple[int, ...]
    """One value per sample type of the profile."""
    functions: tuple[str, ...]
    """Function names, leaf (innermost frame) first."""
    files: tuple[str, ...]
    """File names parallel to :attr:`functions` (``""`` when unknown)."""
    labels: Labels
    """String labels ``(key, value)`` in wire order; a key may repeat."""


@dataclass(frozen=True)
class Profile:
    """One decoded pprof profile (or a legacy folded upload converted to the same shape)."""

    sample_types: tuple[tuple[str, str], ...]
    """``(type, unit)`` per value column, e.g. ``(("cpu", "nanoseconds"),)``."""
    period_type: tuple[str, str]
    period: int
    time_nanos: int
    duration_nanos: int
    samples: tuple[Sample, ...]

    def count_of(self, value: int) -> int:
        """The sample count a value of the stored column stands for (``value / period``, rounded).

        When the period unit differs from the stored column's unit (or the period is not positive)
        the value itself is the count.
        """
        if self.period <= 0 or self.value_unit() != self.period_type[1]:
            return value
        count, remainder = divmod(value, self.period)
        if remainder * 2 >= self.period:
            count += 1
        # A non-zero value is at least one observation even if a sampler reports a fraction of a period.
        return max(count, 1) if value > 0 else count

    def nanos_of(self, value: int) -> int:
        """The nanoseconds a value of the stored column stands for (see :func:`nanos_of`)."""
        return nanos_of(
            value, self.count_of(value), self.value_unit(), self.period_type[1], self.period
        )

    def value_index(self) -> int:
        """Index of the value column the receiver stores.

        The column whose type equals the period type (so ``value / period`` is a sample count),
        else the first column.
        """
        for index, sample_type in enumerate(self.sample_types):
            if sample_type == self.period_type:
                return index
        return 0

    def value_unit(self) -> str:
        """The unit of the stored value column (``""`` for a profile without sample types)."""
        return self.sample_types[self.value_index()][1] if self.sample_types else ""


@dataclass(frozen=True)
class Series:
    """A labelled series with the profiles uploaded for it in one request."""

    labels: Labels
    profiles: tuple[Profile, ...]


def nanos_of(value: int, count: int, unit: str, period_unit: str, period: int) -> int:
    """The weight of one stored sample in nanoseconds, whatever its profile type.

    The value itself when its unit is nanoseconds (CPU or wall time as the agent measured it),
    else ``count`` periods when the period is in nanoseconds, else 0 (not a time).
    """
    if unit == _NANOSECONDS:
        return value
    if period_unit == _NANOSECONDS:
        return count * period
    return 0


def service_of(labels: Iterable[tuple[str, str]]) -> str:
    """Return the ``service_name`` series label, or :data:`UNKNOWN_SERVICE`."""
    for name, value in labels:
        if name == SERVICE_NAME_LABEL and value:
            return value
    return UNKNOWN_SERVICE


def profile_type_of(labels: Iterable[tuple[str, str]]) -> str:
    """The profile type a series' labels name: its ``__name__`` through :data:`PROFILE_TYPES`.

    ``process_cpu`` is ``cpu`` and ``wall`` is ``wall``; a series without ``__name__`` is
    :data:`CPU` (what the legacy ``/ingest`` of 0.x agents sends, and what the agent samples).
    """
    for name, value in labels:
        if name == NAME_LABEL and value:
            return PROFILE_TYPES.get(value, value)
    return CPU


def seconds_key(profile_type: str) -> str:
    """The key under which documents give a profile type's time in seconds: ``cpu_seconds``,
    ``wall_seconds``."""
    return f"{profile_type}_seconds"


def check_span_id(value: str) -> bool:
    """Whether ``value`` is a span id as Grafana links it (16 lowercase hex characters)."""
    return SPAN_ID_RE.fullmatch(value) is not None


def normalize_sample_labels(labels: Iterable[tuple[str, str]]) -> Labels:
    """Rename the legacy ``profile_id`` sample label to ``span_id``, keeping order and duplicates."""
    return tuple(
        (SPAN_ID_LABEL if key == LEGACY_PROFILE_ID_LABEL else key, value) for key, value in labels
    )
