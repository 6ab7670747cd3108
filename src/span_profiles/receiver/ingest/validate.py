"""The rules every request passes before anything of it is stored.

A request is refused as a whole (:class:`~span_profiles.receiver.ingest.errors.InvalidInput`,
HTTP 400) when any series, profile or sample breaks a rule or a
:class:`~span_profiles.receiver.ingest.limits.Limits`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from span_profiles.receiver.ingest.errors import InvalidInput
from span_profiles.receiver.ingest.limits import MAX_SAMPLE_COUNT, Limits
from span_profiles.receiver.model import (
    LEGACY_PROFILE_ID_LABEL,
    SPAN_ID_LABEL,
    Profile,
    Sample,
    Series,
    check_span_id,
)

__all__ = ["LABEL_NAME_RE", "validate_series"]

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")
"""Prometheus label names, plus ``.`` after the first character: the pyroscope-io agent sends series
labels such as ``otel.scope.name`` and ``process.runtime.name`` and Pyroscope accepts them."""


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
