"""Ingest limits and validation (issue #11, "Ingest accepts what Pyroscope would refuse").

One regression test per defect, from the smallest input that reproduced it, through the real
receiver (uvicorn on loopback) where the defect was in HTTP, through the decoders otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.receiver import Limits, ProfileReader, ProfileStore, Receiver, Selection
from span_profiles.receiver.ingest import decode as proto
from span_profiles.receiver.ingest.decode import (
    DecodeBudget,
    decode_pprof,
    decode_push_request,
    encode_pprof,
)
from span_profiles.receiver.ingest.errors import InvalidInput, PayloadTooLarge
from span_profiles.receiver.ingest.limits import MAX_SAMPLE_COUNT
from span_profiles.receiver.ingest.validate import validate_series
from tests.support.receiver import (
    PERIOD,
    PROTO,
    post,
    push_body,
    read_until_closed,
    sample,
    series,
    stored,
)

pytestmark = pytest.mark.e2e

GZIP_PROTO = {**PROTO, "content-encoding": "gzip"}
SPAN = "0123456789abcdef"


def _message(functions: int = 1) -> Any:
    """A pprof message with ``functions`` functions f0.. and the cpu sample type."""
    message = proto._ProfileMessage()
    message.string_table.extend(["", "cpu", "nanoseconds", *(f"f{i}" for i in range(functions))])
    message.sample_type.add(type=1, unit=2)
    message.period_type.type, message.period_type.unit, message.period = 1, 2, PERIOD
    for number in range(functions):
        message.function.add(id=number + 1, name=number + 3)
    return message


def _push_raw(
    *raw_profiles: bytes, labels: tuple[tuple[str, str], ...] = (("service_name", "s"),)
) -> bytes:
    return proto.encode_push_request([(labels, list(raw_profiles))])


@pytest.fixture
def receiver(db_path: Path) -> Any:
    """A receiver with the default limits."""
    with Receiver("127.0.0.1", 0, db_path) as running:
        yield running


# -- 1. stack amplification ----------------------------------------------------------------------


def test_amplified_stack_is_truncated_to_1000_frames_leaf_kept(
    receiver: Receiver, db_path: Path
) -> None:
    """One location with 1000 inline lines referenced 1000 times by one sample stores 1000 frames."""
    message = _message(1000)
    location = message.location.add(id=1)
    for number in range(1000):
        location.line.add(function_id=number + 1)
    message.sample.add(location_id=[1] * 1000, value=[PERIOD])
    body = gzip.compress(_push_raw(message.SerializeToString()), 9)
    # About 8 KB that expanded to a million frames before.
    assert len(body) < 10_000
    assert post(receiver, "/push.v1.PusherService/Push", body, GZIP_PROTO).status == 200
    with ProfileReader(db_path) as store:
        (got,) = store.samples()
    assert len(got.functions) == 1000
    # Line 0 is the innermost frame: the leaf side is what is kept.
    assert got.functions[:2] == ("f0", "f1")
    assert db_path.stat().st_size < 2 * 1024 * 1024


def test_distinct_deep_stacks_hit_the_frame_budget() -> None:
    """Lines x references is bounded per request: distinct deep stacks past the budget are refused."""
    message = _message(100)
    for number in range(100):
        location = message.location.add(id=number + 1)
        for function in range(100):
            location.line.add(function_id=function + 1)
    for number in range(100):
        message.sample.add(location_id=[number + 1, (number + 1) % 100 + 1], value=[PERIOD])
    raw = message.SerializeToString()
    assert len(decode_pprof(raw).samples) == 100
    with pytest.raises(PayloadTooLarge, match="stack frames"):
        decode_pprof(raw, limits=Limits(max_frames_per_request=100 * 200 - 1))


# -- 2. the body limit ---------------------------------------------------------------------------


def test_chunk_size_minus_one_is_refused(db_path: Path) -> None:
    """A chunked body with chunk size -1 is a protocol error (400), not a read until EOF."""
    with Receiver("127.0.0.1", 0, db_path, max_body_bytes=1000) as receiver:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as client:
            client.sendall(
                b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/proto\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n"
            )
            # The server may already have closed: that is the point.
            with contextlib.suppress(OSError):
                client.sendall(b"\0" * 100_000)
            reply, _ = read_until_closed(client)
        assert reply.startswith(b"HTTP/1.1 400 ")
    assert stored(db_path) == 0


# -- 3. gzip bomb by parts ----------------------------------------------------------------------


def test_decompression_cap_is_per_request(db_path: Path) -> None:
    """Three gzipped profiles, each under the cap, together over it: 413, nothing stored."""
    raw = gzip.compress(encode_pprof(series([sample(["x" * 40_000], files=[""])]).profiles[0]))
    limits = Limits(max_decompressed_bytes=100_000, max_profile_bytes=50_000)
    with pytest.raises(PayloadTooLarge, match="request decompresses to more than 100000 bytes"):
        decode_push_request(_push_raw(raw, raw, raw), limits=limits)
    with Receiver("127.0.0.1", 0, db_path, limits=limits) as receiver:
        reply = post(receiver, "/push.v1.PusherService/Push", _push_raw(raw, raw, raw), PROTO)
        assert reply.status == 413
        assert reply.error()["code"] == "resource_exhausted"
    assert stored(db_path) == 0


def test_profile_over_4_mib_uncompressed_is_refused() -> None:
    """A profile of more than max_profile_bytes uncompressed is refused (Pyroscope: 4 MiB)."""
    with pytest.raises(PayloadTooLarge, match="4194304 bytes uncompressed"):
        decode_pprof(gzip.compress(b"\0" * (4 * 1024 * 1024 + 1)))
    with pytest.raises(PayloadTooLarge, match="10 bytes uncompressed"):
        decode_pprof(b"\0" * 11, limits=Limits(max_profile_bytes=10))


# -- 4. the legacy profile_id label --------------------------------------------------------------


def test_profile_id_obeys_the_span_id_rule(receiver: Receiver, db_path: Path) -> None:
    """profile_id="NOT-HEX!" is refused, as pprof label and in a legacy /ingest name."""
    body = push_body(series([sample(["f"], 1, [("profile_id", "NOT-HEX!")])]))
    reply = post(receiver, "/push.v1.PusherService/Push", body, PROTO)
    assert reply.status == 400
    assert "profile_id" in reply.error()["message"]
    name = quote("app.cpu{profile_id=NOT-HEX!}")
    assert post(receiver, f"/ingest?name={name}", b"f 1\n", {}).status == 400
    assert stored(db_path) == 0


# -- 5. sample values ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**63 - 1, -PERIOD, (MAX_SAMPLE_COUNT + 1) * PERIOD])
def test_values_out_of_range_are_refused(receiver: Receiver, db_path: Path, value: int) -> None:
    """The 64-bit maximum, a negative value and more than MAX_SAMPLE_COUNT periods are refused."""
    one = series([sample(["f"])])
    bad = one.profiles[0].samples[0].__class__((value,), ("f",), ("",), ())
    profile = one.profiles[0].__class__(**{**one.profiles[0].__dict__, "samples": (bad, bad)})
    body = proto.encode_push_request([(one.labels, [encode_pprof(profile)])])
    reply = post(receiver, "/push.v1.PusherService/Push", body, PROTO)
    assert reply.status == 400
    assert stored(db_path) == 0


def test_queries_survive_the_largest_counts(db_path: Path) -> None:
    """Many samples at MAX_SAMPLE_COUNT sum without overflow in every query."""
    many = [sample(["f"], MAX_SAMPLE_COUNT, [("span_id", SPAN)]) for _ in range(1000)]
    validate_series([series(many)])
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        store.add([series(many)])
        store.add([series(many)])
        span = Selection(span_ids=(SPAN,))
        assert reader.total_count(span) == 2000 * MAX_SAMPLE_COUNT
        assert reader.total_count() == 2000 * MAX_SAMPLE_COUNT
        assert reader.top(span)[0].self_count == 2000 * MAX_SAMPLE_COUNT
        assert reader.spans()[0].sample_count == 2000 * MAX_SAMPLE_COUNT


# -- 6. Pyroscope's size limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: series([sample(["f"])], extra=[(f"l{i}", "v") for i in range(29)]),
            "31 labels (limit 30)",
            id="series-labels",
        ),
        pytest.param(
            lambda: series([sample(["f"])], extra=[("k", "v" * 2049)]),
            "2049 characters",
            id="series-value",
        ),
        pytest.param(
            lambda: series([sample(["f"])], extra=[("k" * 1025, "v")]),
            "1025 characters",
            id="series-name",
        ),
        pytest.param(
            lambda: series([sample(["f"], 1, [(f"k{i}", "v") for i in range(101)])]),
            "101 labels (limit 100)",
            id="sample-labels",
        ),
        pytest.param(
            lambda: series([sample(["f"], 1, [("k", "v" * 2049)])]),
            "2049 characters",
            id="sample-value",
        ),
        pytest.param(lambda: series([sample(["f"])] * 16_001), "16001 samples", id="samples"),
    ],
)
def test_pyroscope_limits_reject(build: Any, message: str) -> None:
    """Each of Pyroscope's reject limits refuses the request with a message naming it."""
    with pytest.raises(InvalidInput, match=re.escape(message)):
        validate_series([build()])


def test_limits_are_configurable() -> None:
    """A larger limit accepts what the default refuses."""
    wide = series([sample(["f"])], extra=[(f"l{i}", "v") for i in range(29)])
    validate_series([wide], Limits(max_series_labels=31))
    with pytest.raises(ValueError, match="max_series_labels must be positive"):
        Limits(max_series_labels=0)


def test_long_symbols_are_truncated() -> None:
    """A 1 MiB function name is cut to 65,535 characters (Pyroscope truncates symbols too)."""
    raw = encode_pprof(series([sample(["x" * 1024 * 1024], files=[""])]).profiles[0])
    (got,) = decode_pprof(raw).samples
    assert got.functions == ("x" * 65_535,)


@pytest.mark.parametrize("what", ["function", "location"])
def test_id_zero_is_refused(what: str) -> None:
    """pprof ids start at 1: a function or location with id 0 is refused."""
    message = _message(1)
    message.location.add(id=1).line.add(function_id=1)
    message.sample.add(location_id=[1], value=[PERIOD])
    if what == "function":
        message.function[0].id = 0
        message.location[0].line[0].function_id = 0
    else:
        message.location[0].id = 0
        message.sample[0].location_id[0] = 0
    with pytest.raises(InvalidInput, match=f"{what} id 0"):
        decode_pprof(message.SerializeToString())


# -- 7. edge cases ------------------------------------------------------------------------------


def test_empty_gzip_body(receiver: Receiver, db_path: Path) -> None:
    """An empty push body marked gzip is an empty message, as Connect reads it (200, nothing
    stored); on the legacy endpoint, which is not Connect, it is not a gzip stream (400)."""
    reply = post(receiver, "/push.v1.PusherService/Push", b"", GZIP_PROTO)
    assert reply.status == 200
    assert stored(db_path) == 0
    reply = post(receiver, "/ingest?name=app.cpu", b"", {"content-encoding": "gzip"})
    assert reply.status == 400
    assert "empty gzip" in reply.error()["message"]


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("name=app.cpu&sampleRate=2000000000", b"f 1\n"),
        ("name=app.cpu&from=100000000000000000000", b"f 1\n"),
        ("name=app.cpu&until=-1", b"f 1\n"),
        ("name=app.cpu", b"f 18446744073709551616\n"),
    ],
    ids=["huge-sample-rate", "huge-from", "negative-until", "count-over-64-bits"],
)
def test_legacy_ingest_edge_cases_are_400(
    receiver: Receiver, db_path: Path, query: str, body: bytes
) -> None:
    """Parameters and counts out of range get 400 (they were 200 with nothing stored, or 500)."""
    reply = post(receiver, f"/ingest?{query}", body, {})
    assert reply.status == 400
    assert reply.error()["code"] == "invalid_argument"
    assert stored(db_path) == 0


def test_budget_is_shared_by_body_and_profiles() -> None:
    """The gzip body counts against the same per-request cap as the profiles inside it."""
    budget = DecodeBudget(Limits(max_decompressed_bytes=1000))
    budget.gunzip(gzip.compress(b"\0" * 600))
    with pytest.raises(PayloadTooLarge):
        budget.gunzip(gzip.compress(b"\0" * 600))
