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

from span_profiles.receiver import Limits, Receiver
from tests.receiver.helpers import read_until_closed, sample, series
from tests.receiver.test_receiver_server import PROTO, push_body, stored

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
