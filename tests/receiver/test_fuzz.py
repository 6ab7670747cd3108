"""Fuzzing the push and ingest decoders and the HTTP server (hypothesis, bounded budget).

Every input gets a 2xx or a 4xx, never a 5xx, a hang or a crash; a refused input stores nothing.
Inputs are random bytes and mutations of real agent uploads (truncations, flipped bytes, spliced
garbage), gzipped or not, under random headers and legacy query strings; hostile clients over a
real socket (a stalled head or body, a Content-Length larger than what is sent, binary noise, a
dribbled head); and profiles without samples.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

import anyio
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from span_profiles.receiver import Limits, ProfileReader, ProfileStore, Receiver, create_app
from span_profiles.receiver.ingest.decode import (
    DecodeBudget,
    decode_pprof,
    decode_push_request,
    encode_pprof,
    encode_push_request,
)
from span_profiles.receiver.ingest.errors import ReceiverError
from span_profiles.receiver.model import Profile, Sample
from tests.support.receiver import read_until_closed, sample, series, upload_bodies

PUSH = "/push.v1.PusherService/Push"
# Small limits so that the size paths are reached too, and every example stays fast.
LIMITS = Limits(max_body_bytes=200_000, max_decompressed_bytes=400_000, max_profile_bytes=200_000)
BUDGET = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_REAL = [gzip.decompress(path.read_bytes()) for path in upload_bodies("burn-tags")[:2]]
_PPROF = encode_pprof(
    series(
        [sample(["leaf", "root"], 2, [("span_id", "0123456789abcdef"), ("span_name", "GET /")])]
    ).profiles[0]
)
_FOLDED = b"main;handler;burn 12\nmain;idle 3\n"


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with random edits, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2000))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "splice", "delete"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
        elif action == "splice":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


def _maybe_gzip(data: bytes, zipped: bool) -> bytes:
    return gzip.compress(data, 1) if zipped else data


class Client:
    """Sends one request to the app in process (httpx.ASGITransport; app errors propagate)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def post(self, path: str, **options: Any) -> httpx.Response:
        """POST and return the response."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post(path, **options)

        return anyio.run(send)


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    """One app for the whole module (a fresh store per example would dominate the budget)."""
    path = tmp_path_factory.mktemp("fuzz") / "profiles.db"
    with ProfileStore(path) as store:
        yield Client(create_app(store, limits=LIMITS)), path


def _count(path: Path) -> tuple[int, int]:
    with ProfileReader(path) as reader:
        return reader.fetch("SELECT COUNT(*) FROM profiles")[0][0], reader.total_count()


@BUDGET
@given(
    body=mutated(_REAL),
    zipped=st.booleans(),
    content_type=st.sampled_from(["application/proto", "application/x-protobuf", "text/plain"]),
    encoding=st.sampled_from([None, "gzip", "identity", "br"]),
)
def test_push_never_fails_on_the_server(
    app_client: tuple[Client, Path],
    body: bytes,
    zipped: bool,
    content_type: str,
    encoding: str | None,
) -> None:
    """Any push body under any headers gets 2xx or 4xx; a 4xx stores nothing."""
    client, path = app_client
    before = _count(path)
    headers = {"content-type": content_type}
    if encoding is not None:
        headers["content-encoding"] = encoding
    reply = client.post(PUSH, content=_maybe_gzip(body, zipped), headers=headers)
    assert reply.status_code < 500, reply.text
    if reply.status_code != 200:
        assert reply.json()["code"]
        assert _count(path) == before


@BUDGET
@given(
    body=mutated([_FOLDED, _PPROF]),
    zipped=st.booleans(),
    name=st.sampled_from(
        ["app.cpu", "app.cpu{env=prod,span_id=0123456789abcdef}", "x{", "a.wall{k=v}", ""]
    )
    | st.text(max_size=40),
    data_format=st.sampled_from(["folded", "pprof", "", "trie"]),
    numbers=st.lists(
        st.sampled_from(["0", "100", "-1", "99999999999999999999", "abc", "1000000000"]),
        min_size=3,
        max_size=3,
    ),
)
def test_ingest_never_fails_on_the_server(
    app_client: tuple[Client, Path],
    body: bytes,
    zipped: bool,
    name: str,
    data_format: str,
    numbers: list[str],
) -> None:
    """Any legacy upload gets 2xx or 4xx; a 4xx stores nothing."""
    client, path = app_client
    before = _count(path)
    params = {"name": name, "format": data_format, "sampleRate": numbers[0]}
    params |= {"from": numbers[1], "until": numbers[2]}
    headers = {"content-encoding": "gzip"} if zipped else {}
    reply = client.post(
        "/ingest", params=params, content=_maybe_gzip(body, zipped), headers=headers
    )
    assert reply.status_code < 500, reply.text
    if reply.status_code != 200:
        assert _count(path) == before


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=mutated([*_REAL, _PPROF]))
def test_decoders_raise_only_receiver_errors(body: bytes) -> None:
    """The decoders either decode or raise a ReceiverError (a 4xx), whatever the bytes."""
    for decode in (decode_push_request, decode_pprof):
        status = 200
        try:
            decode(body, budget=DecodeBudget(LIMITS))
        except ReceiverError as exc:
            status = exc.status
        assert 200 <= status < 500


# -- hostile clients over a real socket (issue #17) --------------------------------------------

# Short limits, so that each example waits a fraction of a second; the server must act well
# inside the client's bound.
HOSTILE_LIMITS = Limits(header_timeout=0.3, body_idle_timeout=0.3, body_timeout=2.0)
CLIENT_BOUND = 3.0
HOSTILE = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_UPLOAD = gzip.compress(_REAL[0])


@pytest.fixture(scope="module")
def hostile_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A real receiver (uvicorn and the protocol guard) with short timeouts."""
    path = tmp_path_factory.mktemp("hostile") / "profiles.db"
    with Receiver("127.0.0.1", 0, path, limits=HOSTILE_LIMITS) as running:
        yield running


def _head(length: int) -> bytes:
    return (
        "POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/proto\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@st.composite
def hostile_client(draw: st.DrawFn) -> tuple[str, bytes, float]:
    """``(case, bytes sent, seconds between bytes)``: a stalled head, a stalled body, a
    Content-Length larger than what is sent, binary noise, or a head dribbled byte by byte."""
    case = draw(
        st.sampled_from(["stalled-head", "stalled-body", "long-length", "noise", "dribble"])
    )
    whole = _head(len(_UPLOAD)) + _UPLOAD
    head_end = len(_head(len(_UPLOAD)))
    if case == "stalled-head":
        return case, whole[: draw(st.integers(0, head_end - 1))], 0.0
    if case == "stalled-body":
        return case, whole[: draw(st.integers(head_end, len(whole) - 1))], 0.0
    if case == "long-length":
        extra = draw(st.integers(1, 10_000))
        return case, _head(len(_UPLOAD) + extra) + _UPLOAD, 0.0
    if case == "noise":
        return case, draw(st.binary(min_size=1, max_size=3000)), 0.0
    return case, whole[: draw(st.integers(20, head_end - 1))], draw(st.sampled_from([0.02, 0.05]))


def _send(receiver: Receiver, data: bytes, pause: float) -> tuple[bytes, float]:
    """Send ``data`` (one byte per ``pause`` when given), then read until the server closes."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", receiver.port), timeout=CLIENT_BOUND) as client:
        start = time.monotonic()
        try:
            if pause:
                for byte in data:
                    client.sendall(bytes([byte]))
                    time.sleep(pause)
            else:
                client.sendall(data)
        except OSError:
            pass  # Closed by the server while sending.
        reply, _ = read_until_closed(client)
        return reply, time.monotonic() - start


@pytest.mark.e2e
@HOSTILE
@given(client=hostile_client())
def test_hostile_clients_are_answered_or_dropped(
    hostile_receiver: Receiver, client: tuple[str, bytes, float]
) -> None:
    """Each hostile client gets a 4xx or a closed connection within the bound, never a hang or a
    5xx; nothing of it is stored, and the receiver still serves."""
    case, data, pause = client
    before = _count(hostile_receiver.db_path)
    reply, waited = _send(hostile_receiver, data, pause)
    assert waited < CLIENT_BOUND + len(data) * pause, case
    status = reply[9:12]
    assert reply == b"" or (reply.startswith(b"HTTP/1.1 4") and status != b"413"), (
        case,
        reply[:200],
    )
    if case in ("stalled-body", "long-length"):
        assert status == b"408", (case, reply[:200])
    assert _count(hostile_receiver.db_path) == before
    ready, _ = _send(
        hostile_receiver, b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0
    )
    assert ready.startswith(b"HTTP/1.1 200 ")


@BUDGET
@given(
    sample_types=st.lists(
        st.tuples(
            st.sampled_from(["cpu", "wall", "samples"]), st.sampled_from(["nanoseconds", "count"])
        ),
        max_size=3,
    ),
    period=st.integers(0, 10**9),
    times=st.tuples(st.integers(0, 2**62), st.integers(0, 2**62)),
    zero_samples=st.integers(0, 5),
    name=st.sampled_from(["process_cpu", "wall", "memory"]),
)
def test_profiles_without_samples_are_accepted_and_store_nothing(
    app_client: tuple[Client, Path],
    sample_types: list[tuple[str, str]],
    period: int,
    times: tuple[int, int],
    zero_samples: int,
    name: str,
) -> None:
    """A well-formed profile with no samples, or only zero-valued ones, gets 200 and stores no
    profile, whatever its types, period and times."""
    client, path = app_client
    before = _count(path)
    kinds = tuple(sample_types)
    profile = Profile(
        sample_types=kinds,
        period_type=kinds[0] if kinds else ("cpu", "nanoseconds"),
        period=period,
        time_nanos=times[0],
        duration_nanos=times[1],
        samples=tuple(
            Sample(values=(0,) * len(kinds), functions=("f",), files=("",), labels=())
            for _ in range(zero_samples if kinds else 0)
        ),
    )
    body = encode_push_request(
        [((("__name__", name), ("service_name", "fuzz")), [encode_pprof(profile)])]
    )
    reply = client.post(PUSH, content=body, headers={"content-type": "application/proto"})
    assert reply.status_code == 200, reply.text
    assert _count(path) == before
