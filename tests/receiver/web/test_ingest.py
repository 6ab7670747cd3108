"""The HTTP receiver over loopback: Connect push, legacy ingest, limits and error shapes."""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.receiver import ProfileReader, Receiver, Selection, start_receiver_in_thread
from span_profiles.receiver.ingest.decode import encode_pprof
from tests.support.receiver import (
    GZIP_PROTO,
    PERIOD,
    PROTO,
    post,
    push_body,
    sample,
    series,
    stored,
    upload_bodies,
)

pytestmark = pytest.mark.e2e

PUSH = "/push.v1.PusherService/Push"


@pytest.fixture
def receiver(db_path: Path) -> Iterator[Receiver]:
    """A receiver on an ephemeral loopback port."""
    running = start_receiver_in_thread("127.0.0.1", 0, db_path)
    try:
        yield running
    finally:
        running.stop()


def test_real_gzip_uploads_round_trip(receiver: Receiver, db_path: Path) -> None:
    """The captured agent uploads are accepted as sent and their samples are queryable."""
    for body in upload_bodies("burn-tags"):
        reply = post(receiver, PUSH, body.read_bytes(), GZIP_PROTO)
        assert reply.status == 200
        assert reply.body == b""
        assert reply.headers["content-type"] == "application/proto"
    with ProfileReader(db_path) as store:
        samples = list(store.samples(Selection(service="lab.burn1")))
    assert samples
    assert any(("phase", "two") in s.labels for s in samples)
    assert any(("worker", "yes") in s.labels for s in samples)
    assert all(("env", "lab") in s.series_labels for s in samples)
    # 25 s of CPU at 100 Hz, give or take the sampler's slack.
    assert 2000 <= sum(s.count for s in samples) <= 2600


def test_plain_body_and_x_protobuf(receiver: Receiver, db_path: Path) -> None:
    """An uncompressed body with content-type application/x-protobuf is accepted too."""
    body = gzip.decompress(upload_bodies("asyncio-relabelled")[0].read_bytes())
    reply = post(receiver, PUSH, body, {"content-type": "application/x-protobuf"})
    assert reply.status == 200
    with ProfileReader(db_path) as store:
        spans = store.spans(limit=1000)
    assert len(spans) > 100
    assert {s.span_name for s in spans} == {"GET /a", "GET /b"}


def test_keep_alive_serves_several_requests(receiver: Receiver) -> None:
    """Two uploads on one HTTP/1.1 connection both succeed, as the agent reuses connections."""
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        for body in upload_bodies("burn-tags")[:2]:
            connection.request("POST", PUSH, body=body.read_bytes(), headers=GZIP_PROTO)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()


def test_garbage_gets_connect_error(receiver: Receiver, db_path: Path) -> None:
    """A body that is no PushRequest gets 400 with a Connect invalid_argument error."""
    reply = post(receiver, PUSH, b"\xff\xfe definitely not protobuf", PROTO)
    assert reply.status == 400
    assert reply.error()["code"] == "invalid_argument"
    assert stored(db_path) == 0


def test_corrupt_gzip_is_invalid(receiver: Receiver) -> None:
    """A body declared gzip that is not gzip gets 400 invalid_argument."""
    reply = post(receiver, PUSH, b"plain bytes", GZIP_PROTO)
    assert reply.status == 400
    assert "gzip" in reply.error()["message"]


def test_bad_series_label_name_stores_nothing(receiver: Receiver, db_path: Path) -> None:
    """A bad label name in the second series refuses the whole request, the first series included."""
    good = series([sample(["f"])])
    bad = series([sample(["g"])], extra=[("bad-name", "x")])
    reply = post(receiver, PUSH, push_body(good, bad), PROTO)
    assert reply.status == 400
    error = reply.error()
    assert error["code"] == "invalid_argument"
    assert "bad-name" in error["message"]
    assert stored(db_path) == 0


def test_dotted_label_names_are_accepted(receiver: Receiver, db_path: Path) -> None:
    """Series label names with dots after the first character are accepted, as the agent sends them."""
    ok = series([sample(["f"])], extra=[("otel.scope.name", "x"), ("process.runtime.name", "y")])
    assert post(receiver, PUSH, push_body(ok), PROTO).status == 200
    leading_dot = series([sample(["f"])], extra=[(".x", "y")])
    assert post(receiver, PUSH, push_body(leading_dot), PROTO).status == 400
    assert stored(db_path) == 1


@pytest.mark.parametrize(
    "span_id", ["ABCDEF0123456789", "0123456789abcde", "0123456789abcdef0", "", "xyz0123456789abc"]
)
def test_bad_span_id_stores_nothing(receiver: Receiver, db_path: Path, span_id: str) -> None:
    """A span_id sample label that is not 16 lowercase hex characters gets 400 and stores nothing."""
    body = push_body(
        series(
            [
                sample(["f"], labels=[("span_id", "0123456789abcdef")]),
                sample(["g"], labels=[("span_id", "0123456789abcdef"), ("span_id", span_id)]),
            ]
        )
    )
    reply = post(receiver, PUSH, body, PROTO)
    assert reply.status == 400
    assert "span_id" in reply.error()["message"]
    assert stored(db_path) == 0


def test_oversize_body_is_413(db_path: Path) -> None:
    """A body over max_body_bytes gets 413 resource_exhausted and nothing is stored."""
    with Receiver("127.0.0.1", 0, db_path, max_body_bytes=1000) as receiver:
        body = push_body(series([sample([f"function_{i}" for i in range(100)])]))
        assert len(body) > 1000
        reply = post(receiver, PUSH, body, PROTO)
        assert reply.status == 413
        assert reply.error()["code"] == "resource_exhausted"
        assert reply.headers["connection"] == "close"
        small = push_body(series([sample(["f"])]))
        assert post(receiver, PUSH, small, PROTO).status == 200
    assert stored(db_path) == 1


def test_oversize_chunked_body_is_413(db_path: Path) -> None:
    """A chunked body is limited the same way as one with a Content-Length."""
    with Receiver("127.0.0.1", 0, db_path, max_body_bytes=1000) as receiver:
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        try:
            chunks = iter([b"x" * 600, b"y" * 600])
            connection.request("POST", PUSH, body=chunks, headers=PROTO, encode_chunked=True)
            response = connection.getresponse()
            response.read()
            assert response.status == 413
        finally:
            connection.close()
        body = push_body(series([sample(["f"])]))
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        try:
            connection.request("POST", PUSH, body=iter([body]), headers=PROTO, encode_chunked=True)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        finally:
            connection.close()
    assert stored(db_path) == 1


def test_gzip_bomb_is_413(db_path: Path) -> None:
    """A small gzip body that inflates past the decompression limit gets 413."""
    with Receiver("127.0.0.1", 0, db_path, max_decompressed_bytes=50_000) as receiver:
        reply = post(receiver, PUSH, gzip.compress(b"\0" * 200_000), GZIP_PROTO)
        assert reply.status == 413
        assert reply.error()["code"] == "resource_exhausted"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", PUSH, {"content-type": "application/json"}, 415),
        ("POST", PUSH, {"content-type": "application/proto", "content-encoding": "br"}, 415),
        ("POST", "/nope", PROTO, 404),
        ("GET", PUSH, {}, 405),
    ],
)
def test_protocol_errors(
    receiver: Receiver, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """Unsupported content types, encodings, paths and methods get Connect errors, not crashes."""
    body = b"" if method == "GET" else push_body(series([sample(["f"])]))
    reply = post(receiver, path, body, headers, method=method)
    assert reply.status == status
    assert reply.error()["code"] == "unimplemented"


def test_ready(receiver: Receiver) -> None:
    """GET /ready answers 200 once the receiver is serving."""
    reply = post(receiver, "/ready", b"", {}, method="GET")
    assert reply.status == 200
    assert reply.body == b"ready\n"


def test_legacy_ingest_folded(receiver: Receiver, db_path: Path) -> None:
    """Legacy folded ingest stores leaf-first stacks, name labels and the span_id from the name."""
    name = quote("myapp.cpu{env=prod,span_id=0123456789abcdef}")
    path = f"/ingest?name={name}&from=1700000000&until=1700000010&spyName=pyspy&sampleRate=100"
    body = b"main;handler;burn 12\nmain;idle 3\n\n"
    reply = post(receiver, path, body, {"content-type": "binary/octet-stream"})
    assert reply.status == 200
    with ProfileReader(db_path) as store:
        samples = list(store.samples())
    assert [(s.functions, s.count, s.value) for s in samples] == [
        (("burn", "handler", "main"), 12, 12 * PERIOD),
        (("idle", "main"), 3, 3 * PERIOD),
    ]
    assert samples[0].service == "myapp"
    assert samples[0].series_labels == (
        ("__name__", "process_cpu"),
        ("service_name", "myapp"),
        ("env", "prod"),
        ("pyroscope_spy", "pyspy"),
    )
    assert all(s.labels == (("span_id", "0123456789abcdef"),) for s in samples)


def test_legacy_ingest_pprof_raw_and_multipart(receiver: Receiver, db_path: Path) -> None:
    """Legacy pprof ingest accepts a raw body and a multipart form with a profile field."""
    raw = encode_pprof(series([sample(["leaf", "root"], 4, [("phase", "two")])]).profiles[0])
    path = "/ingest?name=other.cpu&format=pprof"
    assert post(receiver, path, gzip.compress(raw), {}).status == 200
    boundary = "XyZ123"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="profile"; filename="p.pprof"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + raw
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert post(receiver, path, form, headers).status == 200
    with ProfileReader(db_path) as store:
        samples = list(store.samples(Selection(service="other")))
    assert len(samples) == 2
    assert all(s.functions == ("leaf", "root") and s.count == 4 for s in samples)
    assert all(s.labels == (("phase", "two"),) for s in samples)


@pytest.mark.parametrize(
    ("query", "body", "message"),
    [
        ("name=app.cpu", b"a;b notanumber\n", "folded line 1"),
        ("name=app.cpu{bad-key=1}", b"a 1\n", "bad-key"),
        ("name=app.cpu{span_id=nothex}", b"a 1\n", "span_id"),
        ("name=app.cpu&format=trie", b"", "format"),
        ("format=folded", b"a 1\n", "name"),
        ("name=app.cpu&sampleRate=0", b"a 1\n", "sampleRate"),
    ],
)
def test_legacy_ingest_errors(
    receiver: Receiver, db_path: Path, query: str, body: bytes, message: str
) -> None:
    """Bad legacy uploads get 400 with a message naming the problem, and nothing is stored."""
    reply = post(receiver, f"/ingest?{quote(query, safe='=&')}", body, {})
    assert reply.status == 400
    assert message in reply.error()["message"]
    assert stored(db_path) == 0


def test_url_and_ephemeral_port(db_path: Path) -> None:
    """port=0 binds a free port that url reports; stop() releases it and is idempotent."""
    receiver = Receiver("127.0.0.1", 0, db_path)
    with pytest.raises(RuntimeError):
        _ = receiver.port
    receiver.start()
    try:
        assert receiver.port != 0
        assert receiver.url == f"http://127.0.0.1:{receiver.port}"
    finally:
        receiver.stop()
    receiver.stop()
