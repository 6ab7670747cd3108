"""Decoded profile data and the validation rules the receiver applies before storing anything.

This module is pure Python (no protobuf) so that the store and the query API work without the
``receiver`` extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "LABEL_NAME_RE",
    "LEGACY_PROFILE_ID_LABEL",
    "SERVICE_NAME_LABEL",
    "SPAN_ID_LABEL",
    "SPAN_ID_RE",
    "SPAN_NAME_LABEL",
    "UNKNOWN_SERVICE",
    "InvalidInput",
    "Profile",
    "Sample",
    "Series",
    "check_span_id",
    "normalize_sample_labels",
    "service_of",
    "validate_series",
]

SERVICE_NAME_LABEL = "service_name"
SPAN_ID_LABEL = "span_id"
SPAN_NAME_LABEL = "span_name"
#: Pyroscope renames this legacy sample label to ``span_id``.
LEGACY_PROFILE_ID_LABEL = "profile_id"
#: What a series without a ``service_name`` label is stored under (Pyroscope does the same).
UNKNOWN_SERVICE = "unknown_service"

#: Prometheus label names, plus ``.`` after the first character: the pyroscope-io agent sends series
#: labels such as ``otel.scope.name`` and ``process.runtime.name`` and Pyroscope accepts them.
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")
#: An OpenTelemetry span id as Grafana links it: 16 lowercase hex characters.
SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")

Labels = tuple[tuple[str, str], ...]


class InvalidInput(ValueError):
    """The request is well-formed HTTP but its content is not acceptable (Connect ``invalid_argument``)."""


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

    def value_index(self) -> int:
        """Index of the value column the receiver stores.

        The column whose type equals the period type (so ``value / period`` is a sample count),
        else the first column.
        """
        for index, sample_type in enumerate(self.sample_types):
            if sample_type == self.period_type:
                return index
        return 0


@dataclass(frozen=True)
class Series:
    """A labelled series with the profiles uploaded for it in one request."""

    labels: Labels
    profiles: tuple[Profile, ...]


def service_of(labels: Iterable[tuple[str, str]]) -> str:
    """Return the ``service_name`` series label, or :data:`UNKNOWN_SERVICE`."""
    for name, value in labels:
        if name == SERVICE_NAME_LABEL and value:
            return value
    return UNKNOWN_SERVICE


def check_span_id(value: str) -> bool:
    """Whether ``value`` is a span id as Grafana links it (16 lowercase hex characters)."""
    return SPAN_ID_RE.fullmatch(value) is not None


def normalize_sample_labels(labels: Iterable[tuple[str, str]]) -> Labels:
    """Rename the legacy ``profile_id`` sample label to ``span_id``, keeping order and duplicates."""
    return tuple(
        (SPAN_ID_LABEL if key == LEGACY_PROFILE_ID_LABEL else key, value) for key, value in labels
    )


def _check_label_name(name: str, where: str) -> None:
    if LABEL_NAME_RE.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid {where} label name {name!r}: must match {LABEL_NAME_RE.pattern}"
        )


def validate_series(series: Sequence[Series]) -> None:
    """Reject a whole request if any series or sample label breaks the rules.

    Series labels: valid names, no name twice. Sample labels: valid keys; every ``span_id`` value
    is 16 lowercase hex characters. Raises :class:`InvalidInput` with a message naming the problem.
    """
    for series_index, one in enumerate(series):
        seen: set[str] = set()
        for name, _value in one.labels:
            _check_label_name(name, "series")
            if name in seen:
                raise InvalidInput(f"series {series_index}: duplicate series label name {name!r}")
            seen.add(name)
        for profile in one.profiles:
            for sample in profile.samples:
                for key, value in sample.labels:
                    _check_label_name(key, "sample")
                    if key == SPAN_ID_LABEL and not check_span_id(value):
                        raise InvalidInput(
                            f"invalid span_id sample label {value!r}: "
                            "must be 16 lowercase hex characters"
                        )
