"""Pyroscope ``PushRequest`` and pprof ``Profile`` codecs, built from the public ``.proto`` specs.

The message classes are created at import time from a hand-written ``FileDescriptorProto`` (no
``protoc``, no generated code) in a private descriptor pool, so they never clash with another
library that registers the same message names. Only the fields the receiver needs are declared;
protobuf skips unknown fields when parsing.

Wire layout (field numbers from ``push/v1/push.proto``, ``types/v1/types.proto`` and
``perftools/profiles/profile.proto``)::

    PushRequest{series(1): RawProfileSeries{labels(1): LabelPair{name(1), value(2)},
                                            samples(2): RawSample{raw_profile(1), ID(2)}}}
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from span_profiles.receiver.ingest.errors import InvalidInput, PayloadTooLarge
from span_profiles.receiver.ingest.limits import Limits
from span_profiles.receiver.model import Profile, Sample, Series

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DecodeBudget",
    "decode_pprof",
    "decode_push_request",
    "encode_pprof",
    "encode_push_request",
    "gunzip",
]

DEFAULT_MAX_DECOMPRESSED_BYTES = Limits().max_decompressed_bytes
"""Default bound on what one request decompresses to (see :attr:`Limits.max_decompressed_bytes`)."""

_GZIP_MAGIC = b"\x1f\x8b"

Frame = tuple[str, str]

# Without protobuf type stubs these are Any; the descriptor helpers below say so explicitly.
_F: Any = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED


def _field(name: str, number: int, type_: int, label: int = _OPTIONAL, type_name: str = "") -> Any:
    field = _F(name=name, number=number, type=type_, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _message(name: str, *fields: Any) -> Any:
    message = descriptor_pb2.DescriptorProto(name=name)
    message.field.extend(fields)
    return message


def _build_classes() -> dict[str, Any]:
    int64, uint64, string, bytes_, msg = (
        _F.TYPE_INT64,
        _F.TYPE_UINT64,
        _F.TYPE_STRING,
        _F.TYPE_BYTES,
        _F.TYPE_MESSAGE,
    )
    pprof = descriptor_pb2.FileDescriptorProto(
        name="span_profiles/perftools_profile.proto", package="perftools.profiles", syntax="proto3"
    )
    pprof.message_type.extend(
        [
            _message(
                "Profile",
                _field("sample_type", 1, msg, _REPEATED, ".perftools.profiles.ValueType"),
                _field("sample", 2, msg, _REPEATED, ".perftools.profiles.Sample"),
                _field("mapping", 3, msg, _REPEATED, ".perftools.profiles.Mapping"),
                _field("location", 4, msg, _REPEATED, ".perftools.profiles.Location"),
                _field("function", 5, msg, _REPEATED, ".perftools.profiles.Function"),
                _field("string_table", 6, string, _REPEATED),
                _field("drop_frames", 7, int64),
                _field("keep_frames", 8, int64),
                _field("time_nanos", 9, int64),
                _field("duration_nanos", 10, int64),
                _field("period_type", 11, msg, _OPTIONAL, ".perftools.profiles.ValueType"),
                _field("period", 12, int64),
                _field("comment", 13, int64, _REPEATED),
                _field("default_sample_type", 14, int64),
            ),
            _message("ValueType", _field("type", 1, int64), _field("unit", 2, int64)),
            _message(
                "Sample",
                _field("location_id", 1, uint64, _REPEATED),
                _field("value", 2, int64, _REPEATED),
                _field("label", 3, msg, _REPEATED, ".perftools.profiles.Label"),
            ),
            _message(
                "Label",
                _field("key", 1, int64),
                _field("str", 2, int64),
                _field("num", 3, int64),
                _field("num_unit", 4, int64),
            ),
            _message(
                "Mapping",
                _field("id", 1, uint64),
                _field("memory_start", 2, uint64),
                _field("memory_limit", 3, uint64),
                _field("file_offset", 4, uint64),
                _field("filename", 5, int64),
                _field("build_id", 6, int64),
            ),
            _message(
                "Location",
                _field("id", 1, uint64),
                _field("mapping_id", 2, uint64),
                _field("address", 3, uint64),
                _field("line", 4, msg, _REPEATED, ".perftools.profiles.Line"),
            ),
            _message("Line", _field("function_id", 1, uint64), _field("line", 2, int64)),
            _message(
                "Function",
                _field("id", 1, uint64),
                _field("name", 2, int64),
                _field("system_name", 3, int64),
                _field("filename", 4, int64),
                _field("start_line", 5, int64),
            ),
        ]
    )
    push = descriptor_pb2.FileDescriptorProto(
        name="span_profiles/pyroscope_push.proto", package="push.v1", syntax="proto3"
    )
    push.message_type.extend(
        [
            _message(
                "PushRequest",
                _field("series", 1, msg, _REPEATED, ".push.v1.RawProfileSeries"),
            ),
            _message(
                "RawProfileSeries",
                _field("labels", 1, msg, _REPEATED, ".push.v1.LabelPair"),
                _field("samples", 2, msg, _REPEATED, ".push.v1.RawSample"),
            ),
            # types.v1.LabelPair in Pyroscope; the package name is not on the wire.
            _message("LabelPair", _field("name", 1, string), _field("value", 2, string)),
            _message("RawSample", _field("raw_profile", 1, bytes_), _field("ID", 2, string)),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(pprof)
    pool.Add(push)
    # GetMessageClass exists from protobuf 4.21 on and is the only spelling left in 5.x and later.
    return {
        full_name: message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
        for full_name in ("perftools.profiles.Profile", "push.v1.PushRequest")
    }


_CLASSES = _build_classes()
# The dynamic classes have no static types; this is the one boundary where they are ``Any``.
_ProfileMessage: Any = _CLASSES["perftools.profiles.Profile"]
_PushRequestMessage: Any = _CLASSES["push.v1.PushRequest"]


def gunzip(data: bytes, limit: int = DEFAULT_MAX_DECOMPRESSED_BYTES, what: str = "") -> bytes:
    """Decompress gzip (or zlib) ``data``, refusing to produce more than ``limit`` bytes.

    Raises :class:`PayloadTooLarge` over the limit and :class:`InvalidInput` on corrupt or empty
    data. ``what`` names the limit in the error message.
    """
    if not data:
        raise InvalidInput("empty gzip data")
    too_large = PayloadTooLarge(what or f"decompressed payload exceeds {limit} bytes")
    out = bytearray()
    pending = data
    try:
        while pending:
            # wbits=47 auto-detects gzip and zlib headers.
            decompressor = zlib.decompressobj(wbits=47)
            chunk = decompressor.decompress(pending, limit - len(out) + 1)
            out += chunk
            if len(out) > limit:
                raise too_large
            if not decompressor.eof:
                if decompressor.unconsumed_tail:
                    raise too_large
                raise InvalidInput("truncated gzip data")
            # Concatenated gzip members are valid gzip.
            pending = decompressor.unused_data
    except zlib.error as exc:
        raise InvalidInput(f"invalid gzip data: {exc}") from None
    return bytes(out)


class DecodeBudget:
    """What is left of one request's :class:`Limits` while its parts are decoded.

    One budget per request: the decompressed bytes of the body and of every embedded profile count
    against :attr:`Limits.max_decompressed_bytes` together, and the frames of every distinct stack
    against :attr:`Limits.max_frames_per_request`.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        """Start with the full allowance of ``limits`` (the defaults when ``None``)."""
        self.limits = limits if limits is not None else Limits()
        self.bytes_left = self.limits.max_decompressed_bytes
        self.frames_left = self.limits.max_frames_per_request

    def gunzip(self, data: bytes, cap: int | None = None, what: str = "") -> bytes:
        """Decompress ``data`` within the request's remaining bytes (and ``cap``, if smaller)."""
        total = self.limits.max_decompressed_bytes
        limit, message = self.bytes_left, f"request decompresses to more than {total} bytes"
        if cap is not None and cap < limit:
            limit, message = cap, what or f"decompressed payload exceeds {cap} bytes"
        out = gunzip(data, limit, message)
        self.bytes_left -= len(out)
        return out

    def take_frames(self, count: int) -> None:
        """Account ``count`` more resolved frames; raises :class:`PayloadTooLarge` past the limit."""
        self.frames_left -= count
        if self.frames_left < 0:
            raise PayloadTooLarge(
                f"request resolves to more than {self.limits.max_frames_per_request} stack frames"
            )


def _string(table: Sequence[str], index: int, what: str) -> str:
    if not 0 <= index < len(table):
        raise InvalidInput(f"pprof: {what} string index {index} out of range ({len(table)})")
    return table[index]


def _frames(message: Any, strings: Sequence[str], limits: Limits) -> dict[int, tuple[Frame, ...]]:
    """Location id -> its frames (inlined callees first), cut to the stack depth limit."""
    symbol = limits.max_symbol_length
    functions: dict[int, Frame] = {}
    for function in message.function:
        if function.id == 0:
            raise InvalidInput("pprof: function id 0 (ids start at 1)")
        functions[function.id] = (
            _string(strings, function.name, "function name")[:symbol],
            _string(strings, function.filename, "function filename")[:symbol],
        )
    locations: dict[int, tuple[Frame, ...]] = {}
    for location in message.location:
        if location.id == 0:
            raise InvalidInput("pprof: location id 0 (ids start at 1)")
        frames: list[Frame] = []
        for line in location.line[: limits.max_stack_depth]:
            frame = functions.get(line.function_id)
            if frame is None:
                raise InvalidInput(f"pprof: unknown function id {line.function_id}")
            frames.append(frame)
        if not frames:
            # A location without symbols: keep the address so the frame is not silently lost.
            frames.append((f"0x{location.address:x}", ""))
        locations[location.id] = tuple(frames)
    return locations


def _stack(
    location_ids: Sequence[int], locations: dict[int, tuple[Frame, ...]], depth: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Function and file names of one sample, leaf first, at most ``depth`` frames.

    Pyroscope truncates at ``max_profile_stacktrace_depth`` too; the leaf side is what a CPU
    profile attributes self time to, so that side is kept.
    """
    names: list[str] = []
    files: list[str] = []
    for location_id in location_ids:
        resolved = locations.get(location_id)
        if resolved is None:
            raise InvalidInput(f"pprof: unknown location id {location_id}")
        for name, filename in resolved:
            names.append(name)
            files.append(filename)
        if len(names) >= depth:
            del names[depth:], files[depth:]
            break
    return tuple(names), tuple(files)


def decode_pprof(
    data: bytes, *, limits: Limits | None = None, budget: DecodeBudget | None = None
) -> Profile:
    """Decode a pprof ``Profile`` (plain or gzipped) into a :class:`Profile`.

    Stacks are resolved to function names and files, leaf first; inlined frames of one location
    are expanded in pprof order (callee first). Stacks deeper than ``limits.max_stack_depth`` and
    names longer than ``limits.max_symbol_length`` are truncated. Only string labels are kept
    (numeric labels are dropped), in wire order, repeated keys included. Raises
    :class:`InvalidInput` on bad data and :class:`PayloadTooLarge` past a size limit.
    """
    budget = budget if budget is not None else DecodeBudget(limits)
    limits = budget.limits
    too_large = f"profile exceeds {limits.max_profile_bytes} bytes uncompressed"
    if data[:2] == _GZIP_MAGIC:
        data = budget.gunzip(data, limits.max_profile_bytes, too_large)
    elif len(data) > limits.max_profile_bytes:
        raise PayloadTooLarge(too_large)
    message = _ProfileMessage()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidInput(f"invalid pprof profile: {exc}") from None
    if len(message.sample) > limits.max_samples_per_profile:
        raise InvalidInput(
            f"profile has {len(message.sample)} samples (limit {limits.max_samples_per_profile})"
        )
    strings: list[str] = list(message.string_table)
    if strings and strings[0] != "":
        raise InvalidInput("pprof: string_table[0] must be the empty string")
    if not strings:
        strings = [""]

    locations = _frames(message, strings, limits)
    # Samples that share a stack share its tuples: memory and the frame budget grow with distinct
    # stacks, not with references to them.
    stacks: dict[tuple[int, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    samples: list[Sample] = []
    for sample in message.sample:
        key = tuple(sample.location_id)
        stack = stacks.get(key)
        if stack is None:
            stack = stacks[key] = _stack(key, locations, limits.max_stack_depth)
            budget.take_frames(len(stack[0]))
        labels = tuple(
            (_string(strings, label.key, "label key"), _string(strings, label.str, "label value"))
            for label in sample.label
            if label.str != 0 or label.num == 0
        )
        samples.append(
            Sample(values=tuple(sample.value), functions=stack[0], files=stack[1], labels=labels)
        )

    sample_types = tuple(
        (_string(strings, t.type, "sample type"), _string(strings, t.unit, "sample unit"))
        for t in message.sample_type
    )
    for sample_value in samples:
        if len(sample_value.values) != len(sample_types):
            raise InvalidInput(
                f"pprof: sample has {len(sample_value.values)} values "
                f"for {len(sample_types)} sample types"
            )
    period_type = (
        _string(strings, message.period_type.type, "period type"),
        _string(strings, message.period_type.unit, "period unit"),
    )
    return Profile(
        sample_types=sample_types,
        period_type=period_type,
        period=message.period,
        time_nanos=message.time_nanos,
        duration_nanos=message.duration_nanos,
        samples=tuple(samples),
    )


def decode_push_request(
    body: bytes, *, limits: Limits | None = None, budget: DecodeBudget | None = None
) -> list[Series]:
    """Decode an uncompressed ``push.v1.PushRequest`` body, including every embedded pprof.

    Every embedded profile draws on the same ``budget`` (one per request). Raises
    :class:`InvalidInput` when the request or any profile in it cannot be decoded and
    :class:`PayloadTooLarge` past a size limit.
    """
    budget = budget if budget is not None else DecodeBudget(limits)
    request = _PushRequestMessage()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidInput(f"invalid PushRequest: {exc}") from None
    result: list[Series] = []
    for series in request.series:
        labels = tuple((pair.name, pair.value) for pair in series.labels)
        profiles = tuple(decode_pprof(raw.raw_profile, budget=budget) for raw in series.samples)
        result.append(Series(labels=labels, profiles=profiles))
    return result


def encode_pprof(profile: Profile) -> bytes:
    """Encode a :class:`Profile` as uncompressed pprof bytes (the inverse of :func:`decode_pprof`).

    The exports write pprof files with it, and clients (``benchmarks/receiver.py``) uploads; one
    location per frame.
    """
    strings: dict[str, int] = {"": 0}

    def intern(text: str) -> int:
        return strings.setdefault(text, len(strings))

    message = _ProfileMessage()
    for type_, unit in profile.sample_types:
        message.sample_type.add(type=intern(type_), unit=intern(unit))
    message.period_type.type = intern(profile.period_type[0])
    message.period_type.unit = intern(profile.period_type[1])
    message.period = profile.period
    message.time_nanos = profile.time_nanos
    message.duration_nanos = profile.duration_nanos
    frame_ids: dict[tuple[str, str], int] = {}
    for sample in profile.samples:
        location_ids: list[int] = []
        for frame in zip(sample.functions, sample.files, strict=True):
            frame_id = frame_ids.get(frame)
            if frame_id is None:
                frame_id = frame_ids[frame] = len(frame_ids) + 1
                message.function.add(id=frame_id, name=intern(frame[0]), filename=intern(frame[1]))
                location = message.location.add(id=frame_id)
                location.line.add(function_id=frame_id)
            location_ids.append(frame_id)
        out = message.sample.add(location_id=location_ids, value=list(sample.values))
        for key, value in sample.labels:
            out.label.add(key=intern(key), str=intern(value))
    message.string_table.extend(strings)
    data: bytes = message.SerializeToString()
    return data


def encode_push_request(
    series: Iterable[tuple[Sequence[tuple[str, str]], Sequence[bytes]]],
) -> bytes:
    """Encode an uncompressed ``PushRequest`` from ``(series labels, [raw pprof, ...])`` pairs.

    What an agent sends (the inverse of :func:`decode_push_request`), for clients such as
    ``benchmarks/receiver.py``.
    """
    request = _PushRequestMessage()
    for labels, raw_profiles in series:
        out = request.series.add()
        for name, value in labels:
            out.labels.add(name=name, value=value)
        for number, raw in enumerate(raw_profiles):
            out.samples.add(raw_profile=raw, ID=f"sample-{number}")
    data: bytes = request.SerializeToString()
    return data
