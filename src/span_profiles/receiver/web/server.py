"""The local HTTP receiver: a Starlette app served by uvicorn, accepting what Pyroscope accepts.

Endpoints (the route table is :data:`ROUTES`):

``POST /push.v1.PusherService/Push``
    The Connect unary RPC the pyroscope-io 1.x agent uses. ``content-type`` must be
    ``application/proto`` (or ``application/x-protobuf`` / ``application/protobuf``); the body may be
    gzipped (``content-encoding: gzip``) and each ``raw_profile`` may itself be gzipped. Success is
    HTTP 200 with an empty protobuf body.

``POST /ingest?name=APP.cpu{k=v,...}&from=..&until=..&format=folded|pprof&spyName=..&sampleRate=..``
    The legacy endpoint of 0.x agents (see :mod:`span_profiles.receiver.ingest.legacy`). ``format=pprof``
    takes a pprof body, raw (optionally gzipped) or as the ``profile`` field of a
    ``multipart/form-data`` body.

``GET /ready``
    200 ``ready``, for scripts and tests that wait for the receiver.

Errors use the Connect error shape: HTTP status and a JSON body ``{"code": "...", "message":
"..."}``: ``invalid_argument`` (400), ``deadline_exceeded`` (408, the body did not arrive within
:attr:`Limits.body_timeout`), ``resource_exhausted`` (413 over a size limit, 507 disk full),
``unimplemented`` (404 unknown path, 405 wrong method, 415 unsupported content type or encoding)
or ``internal`` (500). Routes added through ``extra_routes`` get the same shape for their 404/405.

Every request is decoded and validated completely (:func:`~span_profiles.receiver.model.validate_series`
against :class:`~span_profiles.receiver.model.Limits`) before anything is stored, and stored in one
SQLite transaction, so a refused request stores nothing. A reply sent before the body was read
closes the connection.

Transport: uvicorn (h11) parses HTTP, chunked bodies included, and refuses malformed requests with
400. On top of uvicorn's keep-alive timeout, a connection that has not sent a complete request
head within :attr:`Limits.header_timeout` is closed, so a slow or silent client holds nothing.
The listen backlog is 2048. The receiver binds loopback only unless ``allow_remote=True``: it has
no authentication.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio
import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message
from uvicorn.protocols.http.h11_impl import H11Protocol

from span_profiles.receiver.ingest.decode import DecodeBudget, decode_push_request
from span_profiles.receiver.ingest.legacy import legacy_series
from span_profiles.receiver.model import (
    InvalidInput,
    Limits,
    PayloadTooLarge,
    ReceiverError,
    Series,
    Unsupported,
    validate_series,
)
from span_profiles.receiver.storage.writer import ProfileStore, Retention, default_db_path

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "INGEST_PATH",
    "PUSH_PATH",
    "ROUTES",
    "Receiver",
    "create_app",
    "start_receiver_in_thread",
]

DEFAULT_PORT = 4040
DEFAULT_MAX_BODY_BYTES = Limits().max_body_bytes
PUSH_PATH = "/push.v1.PusherService/Push"
INGEST_PATH = "/ingest"
#: Pending connections the kernel queues before refusing: 16 agents connecting at once must fit.
BACKLOG = 2048

_PROTO_CONTENT_TYPES = frozenset(
    {"application/proto", "application/x-protobuf", "application/protobuf"}
)
_HTTP_CODES = {400: "invalid_argument", 404: "unimplemented", 405: "unimplemented"}

logger = logging.getLogger("span_profiles.receiver")
# A library must not print through logging's last-resort handler; `serve` configures logging.
logger.addHandler(logging.NullHandler())


def _error_response(status: int, code: str, message: str, *, close: bool) -> JSONResponse:
    # Unread body bytes would be parsed as the next request on a kept-alive connection.
    headers = {"connection": "close"} if close else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _body_pending(request: Request) -> bool:
    if getattr(request.state, "body_read", False):
        return False
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


async def _on_receiver_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReceiverError)
    logger.warning("%s %s refused: %s", request.method, request.url.path, exc.message)
    return _error_response(exc.status, exc.code, exc.message, close=_body_pending(request))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"no such endpoint {path!r}"
    elif exc.status_code == 405:
        message = f"{request.method} not allowed for {path}; use {exc.headers.get('allow', '') if exc.headers else ''}"
    else:
        message = exc.detail
    response = _error_response(
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, "unknown"),
        message,
        close=_body_pending(request),
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The whole request body, within :attr:`Limits.max_body_bytes` and :attr:`Limits.body_timeout`."""
    limit = limits.max_body_bytes
    too_large = PayloadTooLarge(f"request body exceeds {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    try:
        with anyio.fail_after(limits.body_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise ReceiverError(
            f"request body not received within {limits.body_timeout} s",
            status=408,
            code="deadline_exceeded",
        ) from None
    request.state.body_read = True
    return bytes(body)


async def _decoded_body(request: Request, budget: DecodeBudget) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise Unsupported(f"unsupported content-encoding {encoding!r}")
    body = await _read_body(request, budget.limits)
    if encoding == "gzip":
        return await run_in_threadpool(budget.gunzip, body)
    return body


def _store(request: Request, series: list[Series]) -> int:
    """Validate and store (runs on a worker thread: SQLite blocks)."""
    store: ProfileStore = request.app.state.store
    validate_series(series, request.app.state.limits)
    try:
        stored = store.add(series, received_at=time.time())
    except sqlite3.Error as exc:
        logger.error("storing profiles failed: %s", exc)
        # sqlite_errorname exists from Python 3.11 on; the message is SQLite's own before that.
        full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "is full" in str(exc)
        if full:
            raise ReceiverError(
                f"storage failed: {exc}", status=507, code="resource_exhausted"
            ) from exc
        raise ReceiverError(f"storage failed: {exc}") from exc
    try:
        store.enforce_retention_if_due()
    except sqlite3.Error as exc:
        # The upload is stored; retention runs again at the next interval.
        logger.warning("retention failed: %s", exc)
    return stored


def _push_series(body: bytes, budget: DecodeBudget) -> list[Series]:
    return decode_push_request(body, budget=budget)


async def _on_disconnect(request: Request, exc: Exception) -> Response:
    # The client hung up mid-body: nobody to answer, nothing stored, no traceback.
    logger.info(
        "%s %s: client disconnected before the body ended", request.method, request.url.path
    )
    return Response(status_code=400, headers={"connection": "close"})


async def _push(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _PROTO_CONTENT_TYPES:
        raise Unsupported(f"unsupported content-type {content_type!r}; use application/proto")
    budget = DecodeBudget(request.app.state.limits)
    body = await _decoded_body(request, budget)
    series = await run_in_threadpool(_push_series, body, budget)
    stored = await run_in_threadpool(_store, request, series)
    logger.debug("push: %d series, %d samples stored", len(series), stored)
    return Response(b"", media_type="application/proto")


async def _multipart_profile(request: Request, body: bytes) -> bytes:
    """The ``profile`` field of a multipart form ``body``, parsed by Starlette (python-multipart)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, receive).form(max_files=4, max_fields=16) as form:
        field = form.get("profile")
        if isinstance(field, UploadFile):
            return await field.read()
        if isinstance(field, str):
            return field.encode("utf-8")
    raise InvalidInput("multipart body has no 'profile' field")


async def _ingest(request: Request) -> Response:
    # First value of each parameter, as Pyroscope's ingest handler reads them.
    params = dict(reversed(request.query_params.multi_items()))
    budget = DecodeBudget(request.app.state.limits)
    payload = await _decoded_body(request, budget)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if params.get("format") == "pprof" and media_type == "multipart/form-data":
        payload = await _multipart_profile(request, payload)
    series = await run_in_threadpool(legacy_series, params, payload, budget)
    stored = await run_in_threadpool(_store, request, [series])
    logger.debug("ingest: %d samples stored", stored)
    return PlainTextResponse("")


async def _ready(request: Request) -> Response:
    return PlainTextResponse("ready\n")


#: The receiver's routes, as data: path, endpoint, methods.
ROUTES: tuple[Route, ...] = (
    Route(PUSH_PATH, _push, methods=["POST"]),
    Route(INGEST_PATH, _ingest, methods=["POST"]),
    Route("/ready", _ready, methods=["GET"]),
)


def create_app(
    store: ProfileStore,
    *,
    limits: Limits | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The receiver as an ASGI app storing into ``store``.

    Args:
        store: Where accepted profiles go; the app never closes it.
        limits: Size limits and timeouts (the defaults when ``None``).
        extra_routes: More routes served after the receiver's own (the web UI mounts at ``/``).
            They see the store as ``request.app.state.store``.
    """
    app = Starlette(
        routes=[*ROUTES, *extra_routes],
        exception_handlers={
            ReceiverError: _on_receiver_error,
            HTTPException: _on_http_error,
            ClientDisconnect: _on_disconnect,
        },
    )
    app.state.store = store
    app.state.limits = limits if limits is not None else Limits()
    return app


def _protocol_class(header_timeout: float) -> type[H11Protocol]:
    class TimedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request head.

        uvicorn's keep-alive timer restarts on every byte, so a client trickling a header, or one
        that connects and sends nothing, would hold the connection forever.
        """

        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm_head_deadline()
            elif self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            if self._head_deadline is None and not self.transport.is_closing():
                self._head_deadline = self.loop.call_later(header_timeout, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closing a connection that sent no complete request head in time")
                self.transport.close()

    return TimedH11Protocol


def _open_for_writing(path: Path, retention: Retention | None) -> ProfileStore:
    try:
        store = ProfileStore(path, retention=retention)
    except OSError as exc:
        # mkdir of the parent directory: report it as the database error it is.
        raise sqlite3.OperationalError(str(exc)) from exc
    try:
        store.enforce_retention()
    except BaseException:
        store.close()
        raise
    return store


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Receiver:
    """The receiver: uvicorn serving :func:`create_app` over a :class:`ProfileStore`.

    ``port=0`` picks a free port (read it from :attr:`port` or :attr:`url` after :meth:`start`).
    Use :meth:`start`/:meth:`stop` (or ``with``) to serve on a daemon thread, or
    :meth:`serve_forever` to serve on the calling thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        db_path: str | os.PathLike[str] | None = None,
        *,
        max_body_bytes: int | None = None,
        max_decompressed_bytes: int | None = None,
        limits: Limits | None = None,
        retention: Retention | None = None,
        allow_remote: bool = False,
        extra_routes: Sequence[BaseRoute] = (),
        access_log: bool = False,
    ) -> None:
        """Configure the receiver; nothing is opened or bound until :meth:`start`.

        Args:
            host: Address to bind; a non-loopback address needs ``allow_remote=True``.
            port: Port to bind, 0 for a free one.
            db_path: The SQLite database (default: :func:`default_db_path`).
            max_body_bytes: Shortcut for ``limits.max_body_bytes``.
            max_decompressed_bytes: Shortcut for ``limits.max_decompressed_bytes``.
            limits: Size limits and timeouts.
            retention: Max age and max size of the database (:class:`Retention` defaults).
            allow_remote: Serve on a non-loopback address. There is no authentication.
            extra_routes: More routes for :func:`create_app` (the web UI).
            access_log: Log every request through the ``uvicorn.access`` logger.
        """
        if not allow_remote and not _is_loopback(host):
            raise ValueError(
                f"{host!r} is not a loopback address; the receiver has no authentication,"
                " pass allow_remote=True (--allow-remote) to serve on it anyway"
            )
        limits = limits if limits is not None else Limits()
        overrides = {
            name: value
            for name, value in (
                ("max_body_bytes", max_body_bytes),
                ("max_decompressed_bytes", max_decompressed_bytes),
            )
            if value is not None
        }
        if overrides:
            limits = dataclasses.replace(limits, **overrides)
        self.host = host
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self.limits = limits
        self.retention = retention
        self.extra_routes = tuple(extra_routes)
        self.access_log = access_log
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._store: ProfileStore | None = None
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()

    @property
    def max_body_bytes(self) -> int:
        """The request body limit in bytes."""
        return self.limits.max_body_bytes

    def bind(self) -> Receiver:
        """Open the database and bind the socket (done by :meth:`start` if not yet); returns ``self``.

        Raises :class:`sqlite3.Error` when the database cannot be opened for writing (a
        read-only file or directory included) and :class:`OSError` when the address is taken.
        """
        if self._server is not None:
            return self
        store = _open_for_writing(self.db_path, self.retention)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server(
                (self.host, self._requested_port), family=family, backlog=BACKLOG
            )
        except BaseException:
            store.close()
            raise
        app = create_app(store, limits=self.limits, extra_routes=self.extra_routes)
        config = uvicorn.Config(
            app,
            http=_protocol_class(self.limits.header_timeout),
            lifespan="off",
            log_config=None,
            access_log=self.access_log,
            backlog=BACKLOG,
            timeout_keep_alive=5,
            # stop() must not wait on a client that keeps a response open.
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self._socket, self._store, self._server = sock, store, uvicorn.Server(config)
        return self

    def _bound(self) -> tuple[uvicorn.Server, socket.socket]:
        self.bind()
        if self._server is None or self._socket is None:
            raise RuntimeError("the receiver was stopped while starting")
        return self._server, self._socket

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when created with ``port=0``)."""
        if self._socket is None:
            raise RuntimeError("receiver is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Base URL to give an agent as ``server_address``, e.g. ``http://127.0.0.1:4040``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def store(self) -> ProfileStore:
        """The open store (after :meth:`bind` or :meth:`start`)."""
        if self._store is None:
            raise RuntimeError("receiver is not started")
        return self._store

    def start(self, timeout: float = 10.0) -> Receiver:
        """Bind and serve on a daemon thread; returns ``self`` once uvicorn is serving."""
        if self._thread is not None:
            raise RuntimeError("receiver already started")
        server, sock = self._bound()
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name="span-profiles-receiver",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the receiver did not start")
            time.sleep(0.005)
        return self

    def serve_forever(self) -> None:
        """Bind (if not yet bound) and serve on the calling thread until :meth:`stop` or a signal.

        On the main thread uvicorn handles SIGINT and SIGTERM: it stops gracefully, then raises
        the signal again for the previous handler.
        """
        server, sock = self._bound()
        try:
            server.run(sockets=[sock])
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, wait for the serving thread, close the socket and the database."""
        server = self._server
        if server is None:
            return
        server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        with self._close_lock:
            sock, store = self._socket, self._store
            self._socket = self._store = self._server = None
        if sock is not None:
            sock.close()
        if store is not None:
            store.close()

    def __enter__(self) -> Receiver:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_receiver_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    db_path: str | os.PathLike[str] | None = None,
    *,
    max_body_bytes: int | None = None,
    limits: Limits | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Receiver:
    """Start a :class:`Receiver` on a daemon thread and return it (call ``.stop()`` when done)."""
    return Receiver(
        host, port, db_path, max_body_bytes=max_body_bytes, limits=limits, extra_routes=extra_routes
    ).start()
