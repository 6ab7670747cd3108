"""The legacy ``/ingest`` upload of pyroscope-io 0.x agents, turned into the same :class:`Series`.

Choices, following Pyroscope's ingest adapter:

* ``name`` is ``APP[.TYPE][{k=v,...}]``. A known profile type suffix (``cpu``, ``itimer``, ``wall``,
  ``alloc_objects``, ...) is split off: ``myapp.cpu`` gives ``service_name=myapp`` and
  ``__name__=process_cpu``; a name without a known suffix is the service name as a whole and
  ``__name__`` is ``process_cpu``. The ``{k=v}`` pairs become series labels, ``spyName`` becomes
  ``pyroscope_spy``. A ``span_id`` or ``profile_id`` pair is moved onto every sample as the
  ``span_id`` sample label, since 0.x agents sent one request per tag set.
* ``format`` defaults to ``folded``: text lines ``root;...;leaf COUNT``; each count becomes a
  sample of value ``COUNT * period`` with ``period = 1e9 / sampleRate`` CPU nanoseconds
  (``sampleRate`` defaults to 100, at most 1e9). ``format=pprof`` takes a pprof body. Other formats
  are refused.

HTTP concerns (the body, gzip, multipart) stay in :mod:`span_profiles.receiver.web.server`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from span_profiles.receiver.ingest.decode import DecodeBudget, decode_pprof
from span_profiles.receiver.ingest.errors import InvalidInput
from span_profiles.receiver.ingest.limits import MAX_SAMPLE_COUNT
from span_profiles.receiver.model import (
    LEGACY_PROFILE_ID_LABEL,
    NAME_LABEL,
    SERVICE_NAME_LABEL,
    SPAN_ID_LABEL,
    Profile,
    Sample,
    Series,
)

__all__ = ["FORMATS", "legacy_series", "parse_legacy_name"]

#: The ``format`` values ``/ingest`` accepts.
FORMATS = frozenset({"folded", "pprof"})

_TYPES = {
    "cpu": "process_cpu",
    "itimer": "process_cpu",
    "wall": "wall",
    "alloc_objects": "memory",
    "alloc_space": "memory",
    "inuse_objects": "memory",
    "inuse_space": "memory",
    "goroutines": "goroutine",
    "mutex_count": "mutex",
    "mutex_duration": "mutex",
    "block_count": "block",
    "block_duration": "block",
}
_NAME_RE = re.compile(r"^(?P<app>[^{}]+?)(?:\{(?P<labels>[^{}]*)\})?$")
_NANOS = 1_000_000_000
# from/until are Unix seconds; their nanoseconds must fit SQLite's signed 64-bit integers.
_MAX_SECONDS = (2**63 - 1) // _NANOS


def parse_legacy_name(name: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Split a legacy ``/ingest`` ``name`` into ``(service_name, __name__, labels)``.

    ``"myapp.cpu{env=prod,region=eu}"`` gives ``("myapp", "process_cpu", (("env", "prod"),
    ("region", "eu")))``. Raises :class:`InvalidInput` on a malformed name.
    """
    match = _NAME_RE.fullmatch(name.strip())
    if match is None:
        raise InvalidInput(f"invalid name {name!r}: expected APP.TYPE{{k=v,...}}")
    app = match["app"].strip()
    service, dot, suffix = app.rpartition(".")
    if dot and service and suffix in _TYPES:
        metric = _TYPES[suffix]
    else:
        service, metric = app, "process_cpu"
    labels: list[tuple[str, str]] = []
    for part in (match["labels"] or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidInput(f"invalid label {part.strip()!r} in name: expected k=v")
        labels.append((key.strip(), value.strip()))
    return service, metric, tuple(labels)


def _parse_folded(text: str, period: int, budget: DecodeBudget) -> tuple[Sample, ...]:
    limits = budget.limits
    samples: list[Sample] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        stack, _, count_text = line.rstrip().rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if not stack or count < 0:
            raise InvalidInput(f"folded line {number}: expected 'frame;frame;... COUNT'")
        if count > MAX_SAMPLE_COUNT:
            raise InvalidInput(f"folded line {number}: count {count} over {MAX_SAMPLE_COUNT}")
        # Root first on the wire; leaf first here, and the leaf side is kept when truncating.
        functions = tuple(
            name[: limits.max_symbol_length]
            for name in reversed(stack.split(";")[-limits.max_stack_depth :])
        )
        budget.take_frames(len(functions))
        samples.append(
            Sample(
                values=(count * period,),
                functions=functions,
                files=("",) * len(functions),
                labels=(),
            )
        )
    if len(samples) > limits.max_samples_per_profile:
        raise InvalidInput(
            f"upload has {len(samples)} stacks (limit {limits.max_samples_per_profile})"
        )
    return tuple(samples)


def _int_param(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = params.get(key) or str(default)
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{key} must be an integer, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{key} must be between {low} and {high}, got {value}")
    return value


def legacy_series(params: Mapping[str, str], payload: bytes, budget: DecodeBudget) -> Series:
    """The :class:`Series` one ``/ingest`` request stands for.

    ``params`` are the query parameters (first value of each), ``payload`` the decompressed folded
    text or pprof bytes (the ``profile`` field already taken out of a multipart form). Raises
    :class:`InvalidInput` on anything malformed.
    """
    name = params.get("name", "")
    if not name:
        raise InvalidInput("missing query parameter 'name'")
    data_format = params.get("format") or "folded"
    if data_format not in FORMATS:
        raise InvalidInput(f"unsupported format {data_format!r}; use folded or pprof")
    service, metric, name_labels = parse_legacy_name(name)
    sample_rate = _int_param(params, "sampleRate", 100, 1, _NANOS)
    start = _int_param(params, "from", 0, 0, _MAX_SECONDS)
    end = _int_param(params, "until", 0, 0, _MAX_SECONDS)
    period = _NANOS // sample_rate
    span_keys = (SPAN_ID_LABEL, LEGACY_PROFILE_ID_LABEL)
    span_labels = tuple((SPAN_ID_LABEL, value) for key, value in name_labels if key in span_keys)
    labels = [(NAME_LABEL, metric), (SERVICE_NAME_LABEL, service)]
    labels += [pair for pair in name_labels if pair[0] not in span_keys]
    if params.get("spyName"):
        labels.append(("pyroscope_spy", params["spyName"]))

    if data_format == "folded":
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("folded body is not UTF-8") from None
        profile = Profile(
            sample_types=(("cpu", "nanoseconds"),),
            period_type=("cpu", "nanoseconds"),
            period=period,
            time_nanos=start * _NANOS,
            duration_nanos=max(end - start, 0) * _NANOS,
            samples=_parse_folded(text, period, budget),
        )
    else:
        profile = decode_pprof(payload, budget=budget)
    if span_labels:
        profile = Profile(
            sample_types=profile.sample_types,
            period_type=profile.period_type,
            period=profile.period,
            time_nanos=profile.time_nanos,
            duration_nanos=profile.duration_nanos,
            samples=tuple(
                Sample(s.values, s.functions, s.files, s.labels + span_labels)
                for s in profile.samples
            ),
        )
    return Series(labels=tuple(labels), profiles=(profile,))
