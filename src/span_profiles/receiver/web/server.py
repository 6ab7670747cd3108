"""The receiver as a server: uvicorn serving :func:`~span_profiles.receiver.web.app.create_app`.

:class:`Receiver` opens the database for writing (and a reader beside it), binds a socket, and
serves on a daemon thread (:meth:`Receiver.start`) or the calling one
(:meth:`Receiver.serve_forever`). uvicorn (h11) parses HTTP, chunked bodies included, and refuses
malformed requests with 400; :mod:`.protocol` adds a deadline per request head and a request-line
check, so a slow, silent or noisy client holds nothing. The listen backlog is 2048. The receiver
binds loopback only unless ``allow_remote=True``: it has no authentication.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.routing import BaseRoute

from span_profiles.receiver.ingest.limits import Limits
from span_profiles.receiver.query.reader import ProfileReader
from span_profiles.receiver.storage.retention import Retention
from span_profiles.receiver.storage.schema import default_db_path
from span_profiles.receiver.storage.writer import ProfileStore
from span_profiles.receiver.web.app import create_app
from span_profiles.receiver.web.protocol import guarded_protocol

__all__ = ["BACKLOG", "DEFAULT_PORT", "Receiver", "start_receiver_in_thread"]

DEFAULT_PORT = 4040
BACKLOG = 2048
"""Pending connections the kernel queues before refusing: 16 agents connecting at once must fit."""


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
    """The receiver: uvicorn serving the app over a :class:`ProfileStore` and a :class:`ProfileReader`.

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
            extra_routes: More routes for :func:`~span_profiles.receiver.web.app.create_app`
                (the web UI is always there).
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
        self._reader: ProfileReader | None = None
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
            reader = ProfileReader(self.db_path)
        except BaseException:
            store.close()
            raise
        try:
            sock = socket.create_server(
                (self.host, self._requested_port), family=family, backlog=BACKLOG
            )
        except BaseException:
            store.close()
            reader.close()
            raise
        app = create_app(store, reader=reader, limits=self.limits, extra_routes=self.extra_routes)
        config = uvicorn.Config(
            app,
            http=guarded_protocol(self.limits.header_timeout),
            lifespan="off",
            log_config=None,
            access_log=self.access_log,
            backlog=BACKLOG,
            timeout_keep_alive=5,
            # stop() must not wait on a client that keeps a response open.
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self._socket, self._store, self._reader = sock, store, reader
        self._server = uvicorn.Server(config)
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
        """The open store, the writer (after :meth:`bind` or :meth:`start`)."""
        if self._store is None:
            raise RuntimeError("receiver is not started")
        return self._store

    @property
    def reader(self) -> ProfileReader:
        """The reader the UI and the JSON API use (after :meth:`bind` or :meth:`start`)."""
        if self._reader is None:
            raise RuntimeError("receiver is not started")
        return self._reader

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
            sock, store, reader = self._socket, self._store, self._reader
            self._socket = self._store = self._reader = self._server = None
        if sock is not None:
            sock.close()
        if reader is not None:
            reader.close()
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
