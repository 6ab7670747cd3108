"""pprof profiles and Pyroscope ``PushRequest`` bodies, written by hand (standard library only).

Why not a library: the wire format needed is small (five message types, varints and
length-delimited fields), ``protobuf`` would be the sampler process's only third-party import
(~10 MB, a C extension or a slow pure-Python fallback), and the receiver's decoder
(:mod:`span_profiles.receiver.proto`, built on ``protobuf``) checks every byte this module writes
in the tests.

:class:`ProfileBuilder` takes weighted samples of any one sample type, so CPU profiles
(``cpu``/``nanoseconds``, value = samples x period) and, later, wall-clock profiles go through
the same code. Field numbers: ``perftools/profiles/profile.proto`` and Pyroscope's
``push/v1/push.proto``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["Frame", "ProfileBuilder", "push_request"]

Frame = tuple[str, str, int]
"""``(filename, function, line)``; line 0 when unknown or merged."""

Labels = tuple[tuple[str, str], ...]


def _varint(value: int, out: bytearray) -> None:
    if value < 0:
        value += 1 << 64  # int64 as two's complement, as protobuf does
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _key(field: int, wire: int, out: bytearray) -> None:
    _varint((field << 3) | wire, out)


def _int(field: int, value: int, out: bytearray) -> None:
    """A varint field; zero is the default and is left out, as proto3 does."""
    if value:
        _key(field, 0, out)
        _varint(value, out)


def _bytes(field: int, value: bytes | bytearray, out: bytearray) -> None:
    _key(field, 2, out)
    _varint(len(value), out)
    out += value


def _packed(field: int, values: Iterable[int], out: bytearray) -> None:
    body = bytearray()
    for value in values:
        _varint(value, body)
    if body:
        _bytes(field, body, out)


class ProfileBuilder:
    """Collects weighted samples and writes one pprof ``Profile``.

    Args:
        sample_type: ``(type, unit)`` of the single sample value, e.g. ``("cpu", "nanoseconds")``.
        period: the sampling period in ``unit`` (1e9 / sample rate for CPU).
        period_type: ``(type, unit)`` of the period; default: ``sample_type``.
    """

    def __init__(
        self,
        sample_type: tuple[str, str],
        period: int,
        period_type: tuple[str, str] | None = None,
    ) -> None:
        self.sample_type = sample_type
        self.period = period
        self.period_type = period_type or sample_type
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[int, int], int] = {}
        self._locations: dict[tuple[int, int], int] = {}
        self._location_lines: list[tuple[int, int]] = []
        self._samples: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        # By the identity of the caller's objects, each held here so that its id stays its
        # own: callers pass the same stack and labels objects many times (interned stacks,
        # a request's labels), and a window of tens of thousands of samples spent most of its
        # time looking up the same frames again.
        self._stack_ids: dict[int, tuple[Sequence[Frame], tuple[int, ...]]] = {}
        self._label_ids: dict[int, tuple[Labels, tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def _string(self, text: str) -> int:
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
        return index

    def _location(self, frame: Frame) -> int:
        filename, function, line = frame
        key = (self._string(function), self._string(filename))
        function_id = self._functions.get(key)
        if function_id is None:
            function_id = self._functions[key] = len(self._functions) + 1
        location_key = (function_id, line)
        location_id = self._locations.get(location_key)
        if location_id is None:
            location_id = self._locations[location_key] = len(self._locations) + 1
            self._location_lines.append(location_key)
        return location_id

    def add(self, frames: Sequence[Frame], labels: Labels, value: int) -> None:
        """Add ``value`` to the sample of this stack (leaf first) and these string labels.

        Each ``frames`` and ``labels`` object is read once and remembered by identity for the
        builder's life: do not change a list after adding it."""
        known = self._stack_ids.get(id(frames))
        if known is not None and known[0] is frames:
            locations = known[1]
        else:
            locations = tuple(self._location(frame) for frame in frames)
            self._stack_ids[id(frames)] = (frames, locations)
        named = self._label_ids.get(id(labels))
        if named is not None and named[0] is labels:
            label_ids = named[1]
        else:
            label_ids = tuple(i for pair in labels for i in map(self._string, pair))
            self._label_ids[id(labels)] = (labels, label_ids)
        key = (locations, label_ids)
        self._samples[key] = self._samples.get(key, 0) + value

    def encode(self, time_nanos: int, duration_nanos: int) -> bytes:
        """The serialized ``Profile`` (uncompressed)."""
        out = bytearray()
        value_type = bytearray()
        _int(1, self._string(self.sample_type[0]), value_type)
        _int(2, self._string(self.sample_type[1]), value_type)
        _bytes(1, value_type, out)
        # Samples share their stacks and labels: each is written once.
        packed: dict[tuple[int, ...], bytes] = {}
        written: dict[tuple[int, ...], bytes] = {}
        for (locations, label_ids), value in self._samples.items():
            stack = packed.get(locations)
            if stack is None:
                body = bytearray()
                _packed(1, locations, body)
                stack = packed[locations] = bytes(body)
            labels = written.get(label_ids)
            if labels is None:
                body = bytearray()
                for i in range(0, len(label_ids), 2):
                    label = bytearray()
                    _int(1, label_ids[i], label)
                    _int(2, label_ids[i + 1], label)
                    _bytes(3, label, body)
                labels = written[label_ids] = bytes(body)
            amount = bytearray()
            _varint(value, amount)
            # Sample (field 2) = the stack, the value packed (field 2: a key byte, a length
            # byte, at most 10 bytes), the labels; written straight into ``out``.
            _key(2, 2, out)
            _varint(len(stack) + 2 + len(amount) + len(labels), out)
            out += stack
            _key(2, 2, out)
            out.append(len(amount))
            out += amount
            out += labels
        for location_id, (function_id, line) in enumerate(self._location_lines, 1):
            line_message = bytearray()
            _int(1, function_id, line_message)
            _int(2, line, line_message)
            location = bytearray()
            _int(1, location_id, location)
            _bytes(4, line_message, location)
            _bytes(4, location, out)
        for (name, filename), function_id in self._functions.items():
            function = bytearray()
            _int(1, function_id, function)
            _int(2, name, function)
            _int(4, filename, function)
            _bytes(5, function, out)
        period_type = bytearray()
        _int(1, self._string(self.period_type[0]), period_type)
        _int(2, self._string(self.period_type[1]), period_type)
        # The string table is complete now: every index above was taken already.
        for text in self._strings:
            _bytes(6, text.encode("utf-8", "surrogateescape"), out)
        _int(9, time_nanos, out)
        _int(10, duration_nanos, out)
        _bytes(11, period_type, out)
        _int(12, self.period, out)
        return bytes(out)


def _uuid4() -> str:
    """A random (version 4) UUID as text (``uuid`` costs the sampler process ~1 MiB)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def push_request(series: Sequence[tuple[Mapping[str, str], Sequence[bytes]]]) -> bytes:
    """A serialized ``PushRequest``: each series is its labels and its raw pprof profiles."""
    out = bytearray()
    for labels, profiles in series:
        body = bytearray()
        for name, value in labels.items():
            pair = bytearray()
            _bytes(1, name.encode(), pair)
            _bytes(2, value.encode(), pair)
            _bytes(1, pair, body)
        for profile in profiles:
            sample = bytearray()
            _bytes(1, profile, sample)
            _bytes(2, _uuid4().encode(), sample)
            _bytes(2, sample, body)
        _bytes(1, body, out)
    return bytes(out)
