"""The HTTP server under the attacks of issue #11: slow and partial clients, bad request lines, a
connection storm, clients that hang up. Real uvicorn on loopback, every wait bounded.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.receiver import Limits, ProfileReader, Receiver
from tests.support.receiver import PROTO, push_body, read_until_closed, sample, series, stored

pytestmark = pytest.mark.e2e

PUSH = "/push.v1.PusherService/Push"
# The server must act well before the client gives up.
CLIENT_TIMEOUT = 10.0


@pytest.fixture
def receiver(db_path: Path) -> Iterator[Receiver]:
    """A receiver with short timeouts."""
    limits = Limits(header_timeout=0.5, body_timeout=0.5)
    with Receiver("127.0.0.1", 0, db_path, limits=limits) as running:
        yield running


def _connect(receiver: Receiver) -> socket.socket:
    return socket.create_connection(("127.0.0.1", receiver.port), timeout=CLIENT_TIMEOUT)


def test_silent_client_is_disconnected(receiver: Receiver) -> None:
    """A client that connects and sends nothing is closed after header_timeout."""
    with _connect(receiver) as client:
        reply, waited = read_until_closed(client)
    assert reply == b""
    assert waited < CLIENT_TIMEOUT / 2


def test_trickled_header_is_disconnected(receiver: Receiver) -> None:
    """A client trickling its request head byte by byte does not hold the connection."""
    with _connect(receiver) as client:
        start = time.monotonic()
        client.sendall(b"POST /push.v1.PusherService/Push HTTP/1.1\r\n")
        try:
            for byte in b"Host: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                client.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - start > CLIENT_TIMEOUT / 2:
                    pytest.fail("the server kept a trickling client")
        except OSError:
            pass  # Closed by the server.
        _, _ = read_until_closed(client)
    assert time.monotonic() - start < CLIENT_TIMEOUT / 2


def test_short_body_gets_408_and_close(receiver: Receiver, db_path: Path) -> None:
    """A body shorter than its Content-Length gets 408 deadline_exceeded after body_timeout."""
    with _connect(receiver) as client:
        client.sendall(
            b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/proto\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        reply, waited = read_until_closed(client)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b'"deadline_exceeded"' in reply
    assert waited < CLIENT_TIMEOUT / 2
    assert stored(db_path) == 0


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32,
            b"HTTP/1.1 400 ",
            id="tls-hello",
        ),
        pytest.param(b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 ", id="garbage"),
        # h11 answers an HTTP/2.0 request line in HTTP/1.1, with its status line.
        pytest.param(
            b"GET /ready HTTP/2.0\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n", id="http-2.0-line"
        ),
    ],
)
def test_bad_request_lines_get_a_status_line(
    receiver: Receiver, request_bytes: bytes, status_line: bytes
) -> None:
    """A TLS hello or garbage gets a 400, an HTTP/2.0 request line a reply: each with a status line."""
    with _connect(receiver) as client:
        client.sendall(request_bytes)
        reply, waited = read_until_closed(client)
    assert reply.startswith(status_line)
    assert waited < CLIENT_TIMEOUT


def test_connection_storm_loses_no_upload(receiver: Receiver, db_path: Path) -> None:
    """16 clients connecting at once, 20 uploads each on new connections: all 320 are stored."""
    body = push_body(series([sample(["f"])]))
    failures: list[BaseException] = []
    statuses: list[int] = []
    start = threading.Barrier(16)

    def client() -> None:
        start.wait()
        for _ in range(20):
            connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
            try:
                connection.request("POST", PUSH, body=body, headers=PROTO)
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            except BaseException as exc:
                failures.append(exc)
            finally:
                connection.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert statuses == [200] * 320
    assert stored(db_path) == 320


def test_client_hanging_up_leaves_no_traceback(
    receiver: Receiver, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up mid-body or before reading the reply logs no error or traceback."""
    caplog.set_level(logging.DEBUG)
    for tail in (b"0123456789", b""):
        with _connect(receiver) as client:
            client.sendall(
                b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/proto\r\nContent-Length: 1000\r\n\r\n" + tail
            )
    body = push_body(series([sample(["f"])]))
    with _connect(receiver) as client:
        client.sendall(
            b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/proto\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
    # Still serving, and the complete upload whose reply was never read is stored.
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while stored(db_path) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=CLIENT_TIMEOUT)
    connection.request("GET", "/ready")
    assert connection.getresponse().status == 200
    connection.close()
    assert stored(db_path) == 1
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert noisy == []


# -- hostile clients with the default limits (issue #17) ----------------------------------------

# What the defaults promise: a stalled or noisy client is answered or dropped within this.
PROMISED = 5.0


@pytest.fixture
def default_receiver(db_path: Path) -> Iterator[Receiver]:
    """A receiver with the default limits."""
    with Receiver("127.0.0.1", 0, db_path) as running:
        yield running


def _push_head(length: int) -> bytes:
    return (
        f"POST {PUSH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(_push_head(10)[:30], id="stalled-head"),
        pytest.param(_push_head(100) + b"0123456789", id="content-length-larger-than-sent"),
        pytest.param(b"POST /\x00\xff\x13\x9c" + bytes(range(256)) * 4, id="binary-noise"),
        pytest.param(b"GARBAGE-WITHOUT-A-LINE-END", id="printable-noise"),
    ],
)
def test_stalled_or_noisy_client_gets_an_answer_or_a_close_in_time(
    default_receiver: Receiver, db_path: Path, sent: bytes
) -> None:
    """With the default limits a stalled head, a body shorter than its Content-Length and binary
    or printable noise are each answered (400 or 408) or closed within 5 s; nothing is stored."""
    with _connect(default_receiver) as client:
        client.sendall(sent)
        reply, waited = read_until_closed(client)
    assert waited < PROMISED
    assert reply == b"" or reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 408 "))
    assert stored(db_path) == 0


def test_binary_noise_is_answered_at_once(default_receiver: Receiver) -> None:
    """A request line with a byte no request line holds gets 400 without waiting for a timeout."""
    with _connect(default_receiver) as client:
        client.sendall(b"POST /push\x00\x01\x02 HTTP/1.1")
        reply, waited = read_until_closed(client)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert waited < Limits().header_timeout


def test_forty_slow_header_clients_are_dropped(default_receiver: Receiver) -> None:
    """40 connections dribbling header bytes for 6 s are not all held: each is dropped at the
    head deadline, and the receiver still serves."""
    clients = [_connect(default_receiver) for _ in range(40)]
    closed = [False] * len(clients)
    head = b"POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    try:
        start = time.monotonic()
        position = 0
        while time.monotonic() - start < 6.0 and not all(closed):
            for number, client in enumerate(clients):
                if closed[number]:
                    continue
                try:
                    client.sendall(head[position : position + 1])
                except OSError:
                    closed[number] = True
            position += 1
            time.sleep(0.1)
        for number, client in enumerate(clients):
            if not closed[number]:
                client.settimeout(0.5)
                try:
                    closed[number] = client.recv(1) == b""
                except OSError as exc:
                    closed[number] = not isinstance(exc, socket.timeout)
    finally:
        for client in clients:
            client.close()
    assert all(closed), f"{closed.count(False)} of 40 slow clients still held after 6 s"
    connection = http.client.HTTPConnection("127.0.0.1", default_receiver.port, timeout=10)
    connection.request("GET", "/ready")
    assert connection.getresponse().status == 200
    connection.close()


def test_empty_profile_is_accepted_and_stores_nothing(
    default_receiver: Receiver, db_path: Path
) -> None:
    """A well-formed profile without samples gets 200 and stores nothing (as Pyroscope)."""
    empty = series([])
    reply = http.client.HTTPConnection("127.0.0.1", default_receiver.port, timeout=10)
    try:
        reply.request("POST", PUSH, body=push_body(empty), headers=PROTO)
        assert reply.getresponse().status == 200
    finally:
        reply.close()
    with ProfileReader(db_path) as reader:
        assert reader.fetch("SELECT COUNT(*) FROM profiles") == [(0,)]
