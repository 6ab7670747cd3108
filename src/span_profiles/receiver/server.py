"""A local HTTP receiver that accepts what a Pyroscope server accepts from Python agents.

Endpoints:

``POST /push.v1.PusherService/Push``
    The Connect unary RPC the pyroscope-io 1.x agent uses. ``content-type`` must be
    ``application/proto`` (or ``application/x-protobuf`` / ``application/protobuf``); the body may be
    gzipped (``content-encoding: gzip``) and each ``raw_profile`` may itself be gzipped. Success is
    HTTP 200 with an empty protobuf body. Failures use the Connect error shape: a JSON body
    ``{"code": "...", "message": "..."}`` with ``invalid_argument`` (400), ``resource_exhausted``
    (413, body or decompressed data over the limit), ``unimplemented`` (404 unknown path, 405 wrong
    method, 415 unsupported content type or encoding) or ``internal`` (500).

``POST /ingest?name=APP.cpu{k=v,...}&from=..&until=..&format=folded|pprof&spyName=..&sampleRate=..``
    The legacy endpoint of 0.x agents. Choices, following Pyroscope's ingest adapter:

    * ``name`` is ``APP[.TYPE][{k=v,...}]``. A known profile type suffix (``cpu``, ``itimer``,
      ``wall``, ``alloc_objects``, ...) is split off: ``myapp.cpu`` gives ``service_name=myapp`` and
      ``__name__=process_cpu``; a name without a known suffix is the service name as a whole and
      ``__name__`` is ``process_cpu``. The ``{k=v}`` pairs become series labels, ``spyName`` becomes
      ``pyroscope_spy``. A ``span_id`` or ``profile_id`` pair is moved onto every sample as the
      ``span_id`` sample label, since 0.x agents sent one request per tag set.
    * ``format`` defaults to ``folded``: text lines ``root;...;leaf COUNT``; each count becomes a
      sample of value ``COUNT * period`` with ``period = 1e9 / sampleRate`` CPU nanoseconds
      (``sampleRate`` defaults to 100). ``format=pprof`` takes a pprof body, raw (optionally
      gzipped) or as the ``profile`` field of a ``multipart/form-data`` body. Other formats are
      refused with 400.

``GET /ready``
    200 ``ready``, for scripts and tests that wait for the receiver.

Every request is validated completely before anything is stored (see
:func:`~span_profiles.receiver.model.validate_series`) and stored in one SQLite transaction, so a
refused request stores nothing. Bodies are read up to ``max_body_bytes + 1`` bytes at most.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from span_profiles.receiver.model import (
    LEGACY_PROFILE_ID_LABEL,
    SERVICE_NAME_LABEL,
    SPAN_ID_LABEL,
    InvalidInput,
    Profile,
    Sample,
    Series,
    validate_series,
)
from span_profiles.receiver.proto import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    PayloadTooLarge,
    decode_pprof,
    decode_push_request,
    gunzip,
)
from span_profiles.receiver.store import ProfileStore, default_db_path

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "PUSH_PATH",
    "Receiver",
    "parse_legacy_name",
    "start_receiver_in_thread",
]

DEFAULT_PORT = 4040
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
PUSH_PATH = "/push.v1.PusherService/Push"
INGEST_PATH = "/ingest"

_PROTO_CONTENT_TYPES = frozenset(
    {"application/proto", "application/x-protobuf", "application/protobuf"}
)
_LEGACY_TYPES = {
    "cpu": "process_cpu",
    "itimer": "process_cpu",
    "wall": "wall",
    "alloc_objects": "memory",
    "alloc_space": "memory",
    "inuse_objects": "memory",
    "inuse_space": "memory",
    "goroutines": "goroutine",
    "mutex_count": "mutex",
    "mutex_duration": "mutex",
    "block_count": "block",
    "block_duration": "block",
}
_LEGACY_NAME_RE = re.compile(r"^(?P<app>[^{}]+?)(?:\{(?P<labels>[^{}]*)\})?$")

logger = logging.getLogger("span_profiles.receiver")
# A library must not print through logging's last-resort handler; `serve` configures logging.
logger.addHandler(logging.NullHandler())


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> _RequestError:
    return _RequestError(HTTPStatus.BAD_REQUEST, "invalid_argument", message)


def parse_legacy_name(name: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Split a legacy ``/ingest`` ``name`` into ``(service_name, __name__, labels)``.

    ``"myapp.cpu{env=prod,region=eu}"`` gives ``("myapp", "process_cpu", (("env", "prod"),
    ("region", "eu")))``. Raises :class:`InvalidInput` on a malformed name.
    """
    match = _LEGACY_NAME_RE.fullmatch(name.strip())
    if match is None:
        raise InvalidInput(f"invalid name {name!r}: expected APP.TYPE{{k=v,...}}")
    app = match["app"].strip()
    service, dot, suffix = app.rpartition(".")
    if dot and service and suffix in _LEGACY_TYPES:
        metric = _LEGACY_TYPES[suffix]
    else:
        service, metric = app, "process_cpu"
    labels: list[tuple[str, str]] = []
    for part in (match["labels"] or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidInput(f"invalid label {part.strip()!r} in name: expected k=v")
        labels.append((key.strip(), value.strip()))
    return service, metric, tuple(labels)


def _parse_folded(text: str, period: int) -> tuple[Sample, ...]:
    samples: list[Sample] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        stack, _, count_text = line.rstrip().rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if not stack or count < 0:
            raise InvalidInput(f"folded line {number}: expected 'frame;frame;... COUNT'")
        functions = tuple(reversed(stack.split(";")))
        samples.append(
            Sample(
                values=(count * period,),
                functions=functions,
                files=("",) * len(functions),
                labels=(),
            )
        )
    return tuple(samples)


def _multipart_field(body: bytes, content_type: str, field: str) -> bytes:
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInput("invalid multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload
    raise InvalidInput(f"multipart body has no {field!r} field")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Let a restarted receiver rebind at once instead of waiting out TIME_WAIT.
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: ProfileStore,
        max_body_bytes: int,
        max_decompressed_bytes: int,
    ) -> None:
        super().__init__(address, _Handler)
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the agent's connection alive between uploads; every reply sets Content-Length.
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "span-profiles-receiver"
    _body_consumed = False

    def log_message(self, format: str, *args: object) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------------

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _reply_error(self, error: _RequestError) -> None:
        logger.warning("%s %s refused: %s", self.command, self.path, error.message)
        body = json.dumps({"code": error.code, "message": error.message}).encode()
        self._reply(error.status, body, "application/json")

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        too_large = _RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "resource_exhausted",
            f"request body exceeds {limit} bytes",
        )
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(limit, too_large)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _RequestError(
                HTTPStatus.LENGTH_REQUIRED, "invalid_argument", "Content-Length required"
            )
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _invalid("invalid Content-Length")
        if length > limit:
            # The body stays unread, so the connection cannot be reused.
            self.close_connection = True
            raise too_large
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise _invalid("request body shorter than Content-Length")
        self._body_consumed = True
        return body

    def _read_chunked(self, limit: int, too_large: _RequestError) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _invalid("invalid chunked encoding") from None
            if size == 0:
                # Trailer section, ended by an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._body_consumed = True
                return bytes(body)
            if len(body) + size > limit:
                self.close_connection = True
                raise too_large
            chunk = self.rfile.read(size)
            self.rfile.readline(8)
            if len(chunk) != size:
                self.close_connection = True
                raise _invalid("truncated chunked body")
            body += chunk

    def _decoded_body(self) -> bytes:
        body = self._read_body()
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "gzip":
            return gunzip(body, self.server.max_decompressed_bytes)
        if encoding in ("identity", ""):
            return body
        raise _RequestError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unimplemented",
            f"unsupported content-encoding {encoding!r}",
        )

    def _store(self, series: list[Series]) -> int:
        validate_series(series)
        try:
            return self.server.store.add(series, received_at=time.time())
        except Exception as exc:
            logger.exception("storing profiles failed")
            raise _RequestError(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal", f"storage failed: {exc}"
            ) from exc

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        """Health check at ``/ready``; every other GET is refused."""
        if urlsplit(self.path).path == "/ready":
            self._reply(HTTPStatus.OK, b"ready\n", "text/plain; charset=utf-8")
            return
        self._run(None)

    def do_POST(self) -> None:
        """Dispatch to the Connect push RPC or the legacy ingest endpoint."""
        path = urlsplit(self.path).path
        self._run(
            self._push if path == PUSH_PATH else self._ingest if path == INGEST_PATH else None
        )

    def _run(self, action: Callable[[], None] | None) -> None:
        self._body_consumed = False
        try:
            if action is None:
                path = urlsplit(self.path).path
                if path in (PUSH_PATH, INGEST_PATH):
                    raise _RequestError(
                        HTTPStatus.METHOD_NOT_ALLOWED, "unimplemented", f"use POST for {path}"
                    )
                raise _RequestError(
                    HTTPStatus.NOT_FOUND, "unimplemented", f"no such endpoint {path!r}"
                )
            action()
        except (_RequestError, PayloadTooLarge, InvalidInput) as exc:
            if isinstance(exc, PayloadTooLarge):
                error = _RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "resource_exhausted", str(exc)
                )
            elif isinstance(exc, InvalidInput):
                error = _invalid(str(exc))
            else:
                error = exc
            if not self._body_consumed:
                # Unread body bytes would be parsed as the next request on a kept-alive connection.
                self.close_connection = True
            self._reply_error(error)
        except Exception:
            logger.exception("unexpected error handling %s %s", self.command, self.path)
            self.close_connection = True
            self._reply_error(
                _RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "internal error")
            )

    def _push(self) -> None:
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in _PROTO_CONTENT_TYPES:
            self.close_connection = True
            raise _RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                f"unsupported content-type {content_type!r}; use application/proto",
            )
        body = self._decoded_body()
        series = decode_push_request(body, max_bytes=self.server.max_decompressed_bytes)
        stored = self._store(series)
        logger.debug("push: %d series, %d samples stored", len(series), stored)
        self._reply(HTTPStatus.OK, b"", "application/proto")

    def _ingest(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)

        def param(key: str, default: str = "") -> str:
            values = query.get(key)
            return values[0] if values else default

        name = param("name")
        if not name:
            raise _invalid("missing query parameter 'name'")
        service, metric, name_labels = parse_legacy_name(name)
        try:
            sample_rate = int(param("sampleRate", "100"))
            start = int(param("from", "0") or "0")
            end = int(param("until", "0") or "0")
        except ValueError:
            raise _invalid("sampleRate, from and until must be integers") from None
        if sample_rate <= 0:
            raise _invalid("sampleRate must be positive")
        period = 1_000_000_000 // sample_rate
        span_labels = tuple(
            (SPAN_ID_LABEL, value)
            for key, value in name_labels
            if key in (SPAN_ID_LABEL, LEGACY_PROFILE_ID_LABEL)
        )
        labels = [("__name__", metric), (SERVICE_NAME_LABEL, service)]
        labels += [
            pair for pair in name_labels if pair[0] not in (SPAN_ID_LABEL, LEGACY_PROFILE_ID_LABEL)
        ]
        if param("spyName"):
            labels.append(("pyroscope_spy", param("spyName")))

        body = self._decoded_body()
        data_format = param("format", "folded") or "folded"
        if data_format == "folded":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise _invalid("folded body is not UTF-8") from None
            profile = Profile(
                sample_types=(("cpu", "nanoseconds"),),
                period_type=("cpu", "nanoseconds"),
                period=period,
                time_nanos=start * 1_000_000_000,
                duration_nanos=max(end - start, 0) * 1_000_000_000,
                samples=_parse_folded(text, period),
            )
        elif data_format == "pprof":
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
                body = _multipart_field(body, content_type, "profile")
            profile = decode_pprof(body, max_bytes=self.server.max_decompressed_bytes)
        else:
            raise _invalid(f"unsupported format {data_format!r}; use folded or pprof")
        if span_labels:
            profile = Profile(
                sample_types=profile.sample_types,
                period_type=profile.period_type,
                period=profile.period,
                time_nanos=profile.time_nanos,
                duration_nanos=profile.duration_nanos,
                samples=tuple(
                    Sample(s.values, s.functions, s.files, s.labels + span_labels)
                    for s in profile.samples
                ),
            )
        stored = self._store([Series(labels=tuple(labels), profiles=(profile,))])
        logger.debug("ingest: %d samples stored", stored)
        self._reply(HTTPStatus.OK, b"", "text/plain")


class Receiver:
    """The receiver: an HTTP server storing into a :class:`ProfileStore`.

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
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    ) -> None:
        """Configure the receiver; nothing is opened or bound until :meth:`start`."""
        if max_body_bytes <= 0 or max_decompressed_bytes <= 0:
            raise ValueError("size limits must be positive")
        self.host = host
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()

    def _bind(self) -> _Server:
        if self._server is None:
            store = ProfileStore(self.db_path)
            try:
                self._server = _Server(
                    (self.host, self._requested_port),
                    store,
                    self.max_body_bytes,
                    self.max_decompressed_bytes,
                )
            except BaseException:
                store.close()
                raise
        return self._server

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when created with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("receiver is not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """Base URL to give an agent as ``server_address``, e.g. ``http://127.0.0.1:4040``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Receiver:
        """Bind and serve on a daemon thread; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("receiver already started")
        server = self._bind()
        # A short poll interval makes stop() return quickly; the idle cost is ten wake-ups a second.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="span-profiles-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind (if not yet bound) and serve on the calling thread until :meth:`stop` or an interrupt."""
        server = self._bind()
        try:
            server.serve_forever()
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, wait for the serving thread, close the socket and the database."""
        server = self._server
        if server is None:
            return
        server.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        with self._close_lock:
            server, self._server = self._server, None
        if server is not None:
            server.server_close()
            server.store.close()

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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Receiver:
    """Start a :class:`Receiver` on a daemon thread and return it (call ``.stop()`` when done)."""
    return Receiver(host, port, db_path, max_body_bytes=max_body_bytes).start()
