"""The ingest endpoints over HTTP: what Pyroscope accepts, read within the limits, then stored.

``POST /push.v1.PusherService/Push``
    The Connect unary RPC the pyroscope-io 1.x agent uses. ``content-type`` must be
    ``application/proto`` (or ``application/x-protobuf`` / ``application/protobuf``); the body may be
    gzipped (``content-encoding: gzip``) and each ``raw_profile`` may itself be gzipped. Success is
    HTTP 200 with an empty protobuf body.

``POST /ingest?name=APP.cpu{k=v,...}&from=..&until=..&format=folded|pprof&spyName=..&sampleRate=..``
    The legacy endpoint of 0.x agents (see :mod:`span_profiles.receiver.ingest.legacy`).
    ``format=pprof`` takes a pprof body, raw (optionally gzipped) or as the ``profile`` field of a
    ``multipart/form-data`` body.

Errors use the Connect error shape: HTTP status and a JSON body ``{"code": "...", "message":
"..."}``: ``invalid_argument`` (400), ``deadline_exceeded`` (408, the body stalled for
:attr:`~span_profiles.receiver.ingest.limits.Limits.body_idle_timeout` or did not arrive within
:attr:`~span_profiles.receiver.ingest.limits.Limits.body_timeout`), ``resource_exhausted`` (413 over
a size limit, 507 disk full), ``unimplemented`` (404 unknown path, 405 wrong method, 415
unsupported content type or encoding) or ``internal`` (500).

Every request is decoded and validated completely before anything is stored, and stored in one
SQLite transaction, so a refused request stores nothing. A profile without samples, and an empty
push body (gzip or not: Connect reads it as an empty message), are valid uploads of nothing: 200,
nothing stored, as Pyroscope does. A reply sent before the body was read closes the connection.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message

from span_profiles.receiver.ingest.decode import DecodeBudget, decode_push_request
from span_profiles.receiver.ingest.errors import (
    InvalidInput,
    PayloadTooLarge,
    ReceiverError,
    Unsupported,
)
from span_profiles.receiver.ingest.legacy import legacy_series
from span_profiles.receiver.ingest.limits import Limits
from span_profiles.receiver.ingest.validate import validate_series
from span_profiles.receiver.model import Series
from span_profiles.receiver.storage.writer import ProfileStore

__all__ = ["INGEST_PATH", "PUSH_PATH", "ROUTES", "logger", "on_http_error", "on_receiver_error"]

PUSH_PATH = "/push.v1.PusherService/Push"
INGEST_PATH = "/ingest"

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


async def on_receiver_error(request: Request, exc: Exception) -> Response:
    """A refused request: its Connect error, the connection closed if the body is unread."""
    assert isinstance(exc, ReceiverError)
    logger.warning("%s %s refused: %s", request.method, request.url.path, exc.message)
    return _error_response(exc.status, exc.code, exc.message, close=_body_pending(request))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (any route's) in the Connect error shape."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"no such endpoint {path!r}"
    elif exc.status_code == 405:
        allowed = exc.headers.get("allow", "") if exc.headers else ""
        message = f"{request.method} not allowed for {path}; use {allowed}"
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


async def on_disconnect(request: Request, exc: Exception) -> Response:
    """The client hung up mid-body: nobody to answer, nothing stored, no traceback."""
    logger.info(
        "%s %s: client disconnected before the body ended", request.method, request.url.path
    )
    return Response(status_code=400, headers={"connection": "close"})


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, within ``max_body_bytes``, ``body_idle_timeout`` and ``body_timeout``."""
    limit = limits.max_body_bytes
    too_large = PayloadTooLarge(f"request body exceeds {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    chunks = request.stream()
    deadline = anyio.current_time() + limits.body_timeout
    try:
        while True:
            # Each wait is bounded by the idle timeout, the whole body by the overall one.
            wait = min(limits.body_idle_timeout, deadline - anyio.current_time())
            with anyio.fail_after(max(wait, 0.0)):
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
            body += chunk
            if len(body) > limit:
                raise too_large
    except TimeoutError:
        raise ReceiverError(
            f"request body stalled for {limits.body_idle_timeout} s or took over"
            f" {limits.body_timeout} s",
            status=408,
            code="deadline_exceeded",
        ) from None
    request.state.body_read = True
    return bytes(body)


async def _decoded_body(request: Request, budget: DecodeBudget, *, connect: bool = False) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise Unsupported(f"unsupported content-encoding {encoding!r}")
    body = await _read_body(request, budget.limits)
    # Connect reads an empty body as an empty message, compressed or not (connect-go skips the
    # decompression); the legacy endpoint is plain HTTP.
    if encoding == "gzip" and (body or not connect):
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


async def _push(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _PROTO_CONTENT_TYPES:
        raise Unsupported(f"unsupported content-type {content_type!r}; use application/proto")
    budget = DecodeBudget(request.app.state.limits)
    body = await _decoded_body(request, budget, connect=True)
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


ROUTES: tuple[Route, ...] = (
    Route(PUSH_PATH, _push, methods=["POST"]),
    Route(INGEST_PATH, _ingest, methods=["POST"]),
    Route("/ready", _ready, methods=["GET"]),
)
"""The ingest routes, as data: path, endpoint, methods (``GET /ready`` answers ``ready``)."""

EXCEPTION_HANDLERS = {
    ReceiverError: on_receiver_error,
    HTTPException: on_http_error,
    ClientDisconnect: on_disconnect,
}
"""How the app answers a refused request, a 404/405 and a client that hung up."""
