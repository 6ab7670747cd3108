"""Decoded profile data, the ingest limits and the validation rules applied before storing anything.

This module is pure Python (no protobuf) so that the store and the query API work without the
``receiver`` extra.

Limits follow Pyroscope's distributor defaults and its reject-or-truncate choice: label sizes and
counts, samples per profile and profile size refuse the whole request; stack depth and symbol length
truncate (see :class:`Limits`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

__all__ = [
    "LABEL_NAME_RE",
    "LEGACY_PROFILE_ID_LABEL",
    "MAX_SAMPLE_COUNT",
    "SERVICE_NAME_LABEL",
    "SPAN_ID_LABEL",
    "SPAN_ID_RE",
    "SPAN_NAME_LABEL",
    "UNKNOWN_SERVICE",
    "InvalidInput",
    "Limits",
    "PayloadTooLarge",
    "Profile",
    "ReceiverError",
    "Sample",
    "Series",
    "Unsupported",
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

#: Largest sample count one sample may carry (2**32 periods is 497 days of CPU at 100 Hz). With it,
#: sums over any store that fits on a disk stay far inside SQLite's 64-bit integers.
MAX_SAMPLE_COUNT = 2**32

Labels = tuple[tuple[str, str], ...]


class ReceiverError(Exception):
    """A refused request: carries its HTTP status and its Connect error code."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidInput(ReceiverError, ValueError):
    """The request is well-formed HTTP but its content is not acceptable (Connect ``invalid_argument``)."""

    status = 400
    code = "invalid_argument"


class PayloadTooLarge(ReceiverError, ValueError):
    """A body, a decompressed payload or a decoded profile exceeds a limit (``resource_exhausted``)."""

    status = 413
    code = "resource_exhausted"


class Unsupported(ReceiverError):
    """An unsupported content type or content encoding (Connect ``unimplemented``, HTTP 415)."""

    status = 415
    code = "unimplemented"


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and how long a client may take to send it.

    The defaults are Pyroscope's (``validation.Limits``) where it has one. ``reject`` limits refuse
    the whole request with a Connect error; ``truncate`` limits shorten and keep.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    """Request body as sent (compressed), reject (413)."""
    max_decompressed_bytes: int = 64 * 1024 * 1024
    """Everything one request decompresses to, body and embedded profiles together, reject (413)."""
    max_profile_bytes: int = 4 * 1024 * 1024
    """One uncompressed pprof profile (Pyroscope ``max_profile_size_bytes``), reject (413)."""
    max_samples_per_profile: int = 16_000
    """Samples in one profile (``max_profile_stacktrace_samples``), reject (400)."""
    max_stack_depth: int = 1000
    """Frames per stack (``max_profile_stacktrace_depth``), truncate: the leaf side is kept."""
    max_frames_per_request: int = 4_000_000
    """Frames of all samples of one request after truncation (bounds lines x references), reject (413)."""
    max_symbol_length: int = 65_535
    """Function and file names (``max_profile_symbol_value_length``), truncate."""
    max_label_name_length: int = 1024
    """Series and sample label names (``max_label_name_length``), reject (400)."""
    max_label_value_length: int = 2048
    """Series and sample label values (``max_label_value_length``), reject (400)."""
    max_series_labels: int = 30
    """Label names per series (``max_label_names_per_series``), reject (400)."""
    max_sample_labels: int = 100
    """Labels per sample (``max_profile_stacktrace_sample_labels``), reject (400)."""
    header_timeout: float = 10.0
    """Seconds from connecting (or from the end of the previous reply) to a complete request head."""
    body_timeout: float = 30.0
    """Seconds to receive the whole body once the head arrived; then 408 and the connection closes."""

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be positive")


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
        index = self.value_index()
        unit = self.sample_types[index][1] if self.sample_types else ""
        if self.period <= 0 or unit != self.period_type[1]:
            return value
        count, remainder = divmod(value, self.period)
        if remainder * 2 >= self.period:
            count += 1
        # A non-zero value is at least one observation even if a sampler reports a fraction of a period.
        return max(count, 1) if value > 0 else count

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


def _check_label(name: str, value: str, where: str, limits: Limits) -> None:
    if len(name) > limits.max_label_name_length:
        raise InvalidInput(
            f"{where} label name {name[:40]!r}... is {len(name)} characters"
            f" (limit {limits.max_label_name_length})"
        )
    if LABEL_NAME_RE.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid {where} label name {name!r}: must match {LABEL_NAME_RE.pattern}"
        )
    if len(value) > limits.max_label_value_length:
        raise InvalidInput(
            f"{where} label {name!r} value is {len(value)} characters"
            f" (limit {limits.max_label_value_length})"
        )


def _validate_sample(sample: Sample, profile: Profile, index: int, limits: Limits) -> None:
    if len(sample.labels) > limits.max_sample_labels:
        raise InvalidInput(
            f"sample has {len(sample.labels)} labels (limit {limits.max_sample_labels})"
        )
    for key, value in sample.labels:
        _check_label(key, value, "sample", limits)
        # profile_id is stored as span_id, so it obeys the same rule.
        if key in (SPAN_ID_LABEL, LEGACY_PROFILE_ID_LABEL) and not check_span_id(value):
            raise InvalidInput(
                f"invalid {key} sample label {value!r}: must be 16 lowercase hex characters"
            )
    for number in sample.values:
        if number < 0:
            raise InvalidInput(f"negative sample value {number}")
    if sample.values and profile.count_of(sample.values[index]) > MAX_SAMPLE_COUNT:
        raise InvalidInput(
            f"sample value {sample.values[index]} is over {MAX_SAMPLE_COUNT} periods"
        )


def validate_series(series: Sequence[Series], limits: Limits | None = None) -> None:
    """Reject a whole request if any series, profile or sample breaks a rule or a :class:`Limits`.

    Series labels: valid names, no name twice, at most ``max_series_labels``. Sample labels: valid
    keys, at most ``max_sample_labels``; every ``span_id`` (and legacy ``profile_id``) value is 16
    lowercase hex characters. Label names and values within their length limits. Sample values are
    not negative and stand for at most :data:`MAX_SAMPLE_COUNT` periods. Raises
    :class:`InvalidInput` with a message naming the problem.
    """
    limits = limits if limits is not None else Limits()
    for series_index, one in enumerate(series):
        if len(one.labels) > limits.max_series_labels:
            raise InvalidInput(
                f"series {series_index}: {len(one.labels)} labels"
                f" (limit {limits.max_series_labels})"
            )
        seen: set[str] = set()
        for name, value in one.labels:
            _check_label(name, value, "series", limits)
            if name in seen:
                raise InvalidInput(f"series {series_index}: duplicate series label name {name!r}")
            seen.add(name)
        for profile in one.profiles:
            if len(profile.samples) > limits.max_samples_per_profile:
                raise InvalidInput(
                    f"profile has {len(profile.samples)} samples"
                    f" (limit {limits.max_samples_per_profile})"
                )
            index = profile.value_index()
            for sample in profile.samples:
                _validate_sample(sample, profile, index, limits)
