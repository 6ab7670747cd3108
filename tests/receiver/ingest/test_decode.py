"""Decoding real pyroscope-io 1.4 uploads and hand-made pprof data."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.receiver.ingest.decode import (
    decode_pprof,
    decode_push_request,
    encode_pprof,
    encode_push_request,
    gunzip,
)
from span_profiles.receiver.ingest.errors import InvalidInput, PayloadTooLarge
from span_profiles.receiver.model import Sample, Series
from tests.support.receiver import (
    CPU,
    PERIOD,
    sample,
    series,
    spans_json,
    upload_bodies,
    upload_headers,
)

_BURN = re.compile(r"^burn_(?P<path>[ab])_(?P<v>\d+)$")


def _decode_case(case: str) -> list[Series]:
    result: list[Series] = []
    for body in upload_bodies(case):
        assert upload_headers(body)["content-encoding"] == "gzip"
        result.extend(decode_push_request(gunzip(body.read_bytes())))
    return result


def test_burn_tags_series_labels() -> None:
    """Every burn-tags upload is one process_cpu series of lab.burn1 with the global and otel tags."""
    decoded = _decode_case("burn-tags")
    assert len(decoded) == 3
    for one in decoded:
        labels = dict(one.labels)
        assert labels["service_name"] == "lab.burn1"
        assert labels["__name__"] == "process_cpu"
        assert labels["env"] == "lab"
        assert labels["region"] == "local"
        assert labels["otel.scope.name"] == "com.grafana.pyroscope/python"
        assert labels["process.runtime.name"] == "cpython"
        assert len(one.profiles) == 1


def test_burn_tags_profile_shape_and_thread_tags() -> None:
    """The burn-tags profiles are cpu/nanoseconds at 100 Hz and carry phase=two and worker=yes samples."""
    samples: list[Sample] = []
    for one in _decode_case("burn-tags"):
        profile = one.profiles[0]
        assert profile.sample_types == (CPU,)
        assert profile.period_type == CPU
        assert profile.period == PERIOD
        assert profile.time_nanos > 0
        assert profile.duration_nanos > 0
        samples.extend(profile.samples)
    assert all(s.values[0] > 0 and s.values[0] % PERIOD == 0 for s in samples)
    phase = [s for s in samples if s.labels == (("phase", "two"),)]
    worker = [s for s in samples if s.labels == (("worker", "yes"),)]
    assert phase
    assert worker
    assert all("worker_burn" in s.functions for s in worker)
    assert all("worker_burn" not in s.functions for s in phase)
    # Leaf first: the script's stacks end in <module> (main thread) at the root.
    assert any(s.functions[0] == "leaf" and s.functions[-1] == "<module>" for s in samples)
    assert {f for s in samples for f in s.files} >= {"/srv/app/burn1.py"}


def test_asyncio_naive_samples_carry_many_span_ids() -> None:
    """Naive-agent samples keep every duplicate span_id label, all of them valid known span ids."""
    spans = spans_json("asyncio-naive")
    samples = [s for one in _decode_case("asyncio-naive") for p in one.profiles for s in p.samples]
    counts = [sum(1 for key, _ in s.labels if key == "span_id") for s in samples]
    assert max(counts) >= 15
    assert sum(1 for c in counts if c > 1) > len(samples) // 2
    for s in samples:
        ids = [value for key, value in s.labels if key == "span_id"]
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(r"[0-9a-f]{16}", i) and i in spans for i in ids)


def test_asyncio_relabelled_span_ids_match_requests() -> None:
    """Each relabelled handler sample has one span_id, and burn_X_K belongs to the request /X?v=K."""
    spans = spans_json("asyncio-relabelled")
    checked = 0
    for one in _decode_case("asyncio-relabelled"):
        for s in one.profiles[0].samples:
            burn = [m for m in map(_BURN.fullmatch, s.functions) if m]
            if not burn:
                continue
            ids = [value for key, value in s.labels if key == "span_id"]
            assert len(ids) == 1
            assert spans[ids[0]] == [f"/{burn[0]['path']}", f"v={burn[0]['v']}"]
            assert dict(s.labels)["span_name"] == f"GET /{burn[0]['path']}"
            checked += 1
    assert checked > 250


def test_gzipped_raw_profile_decodes_like_plain() -> None:
    """A raw_profile that is itself gzipped decodes to the same profile as the plain bytes."""
    profile = series([sample(["leaf", "root"], 3, [("span_id", "0123456789abcdef")])]).profiles[0]
    raw = encode_pprof(profile)
    assert decode_pprof(gzip.compress(raw)) == decode_pprof(raw) == profile
    request = encode_push_request([((("service_name", "x"),), [gzip.compress(raw)])])
    assert decode_push_request(request)[0].profiles == (profile,)


def test_duplicate_label_keys_keep_order() -> None:
    """Repeated sample label keys survive an encode/decode round trip in their original order."""
    labels = [
        ("span_id", "bbbbbbbbbbbbbbbb"),
        ("span_name", "GET /a"),
        ("span_id", "aaaaaaaaaaaaaaaa"),
    ]
    profile = series([sample(["f"], 1, labels)]).profiles[0]
    assert decode_pprof(encode_pprof(profile)).samples[0].labels == tuple(labels)


def test_numeric_labels_are_dropped() -> None:
    """Numeric pprof labels are not reported as string labels."""
    from span_profiles.receiver.ingest import decode as proto

    message = proto._ProfileMessage()
    message.ParseFromString(encode_pprof(series([sample(["f"], 1, [("k", "v")])]).profiles[0]))
    message.string_table.append("bytes")
    message.sample[0].label.add(key=1, num=42, num_unit=len(message.string_table) - 1)
    decoded = decode_pprof(message.SerializeToString())
    assert decoded.samples[0].labels == (("k", "v"),)


def test_inlined_frames_expand_leaf_first() -> None:
    """A location with several lines expands into callee-first frames, as pprof defines."""
    from span_profiles.receiver.ingest import decode as proto

    message = proto._ProfileMessage()
    message.string_table.extend(["", "inner", "outer", "caller", "f.py", "cpu", "nanoseconds"])
    message.sample_type.add(type=5, unit=6)
    message.function.add(id=1, name=1, filename=4)
    message.function.add(id=2, name=2, filename=4)
    message.function.add(id=3, name=3, filename=4)
    location = message.location.add(id=1)
    location.line.add(function_id=1)
    location.line.add(function_id=2)
    message.location.add(id=2).line.add(function_id=3)
    message.sample.add(location_id=[1, 2], value=[7])
    decoded = decode_pprof(message.SerializeToString())
    assert decoded.samples[0].functions == ("inner", "outer", "caller")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m: m.sample[0].label.add(key=99, str=1), id="label-string-index"),
        pytest.param(lambda m: m.sample[0].location_id.append(77), id="unknown-location"),
        pytest.param(lambda m: m.sample[0].value.append(1), id="value-count"),
        pytest.param(lambda m: m.string_table.__setitem__(0, "x"), id="string-table-0"),
    ],
)
def test_inconsistent_pprof_is_invalid(mutate: Callable[[Any], object]) -> None:
    """Broken references inside a pprof are reported as InvalidInput, not as a crash."""
    from span_profiles.receiver.ingest import decode as proto

    message = proto._ProfileMessage()
    message.ParseFromString(encode_pprof(series([sample(["f", "g"], 1)]).profiles[0]))
    mutate(message)
    with pytest.raises(InvalidInput, match="pprof"):
        decode_pprof(message.SerializeToString())


def test_garbage_is_invalid() -> None:
    """Bytes that are not protobuf are refused with InvalidInput."""
    with pytest.raises(InvalidInput, match="PushRequest"):
        decode_push_request(b"\xff\xff\xff\xff garbage")
    with pytest.raises(InvalidInput, match="gzip"):
        gunzip(b"\x1f\x8b not really gzip")


def test_gunzip_enforces_limit() -> None:
    """Decompression stops with PayloadTooLarge once the output exceeds the limit."""
    bomb = gzip.compress(b"\0" * 100_000)
    assert len(gunzip(bomb, 100_000)) == 100_000
    with pytest.raises(PayloadTooLarge):
        gunzip(bomb, 99_999)


def test_concatenated_gzip_members() -> None:
    """Several gzip members in a row decompress to the concatenation, as gzip defines."""
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
