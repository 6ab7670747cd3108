"""Send profiles to a Pyroscope server (or ``span-profiles serve``) the way pyroscope-io does.

``POST <server_address>/push.v1.PusherService/Push``, ``content-type: application/proto``,
``content-encoding: gzip``, body a ``PushRequest`` (:func:`.pprof.push_request`); basic auth,
``X-Scope-OrgID`` for the tenant and any extra headers, as the agent's settings say. One attempt
per upload with a timeout: a refused or failed upload drops that window, as the agent does.

Standard library only: this module runs in the sampler process. Plain ``http://`` is a short
HTTP/1.1 exchange over a socket (``http.client`` would bring ``ssl`` and ``email``, ~8 MiB of
memory in a process that otherwise needs little); ``https://`` uses ``http.client``.
"""

from __future__ import annotations

import base64
import gzip
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["PATH", "PushError", "Pusher"]

PATH = "/push.v1.PusherService/Push"


class PushError(Exception):
    """An upload failed: the server refused it or could not be reached."""


class Pusher:
    """Where and how to upload."""

    def __init__(
        self,
        server_address: str,
        basic_auth_username: str = "",
        basic_auth_password: str = "",
        tenant_id: str = "",
        http_headers: Mapping[str, str] | None = None,
        user_agent: str = "span-profiles",
    ) -> None:
        self.server_address = server_address
        self._username = basic_auth_username
        self._password = basic_auth_password
        self.tenant_id = tenant_id
        self._extra = dict(http_headers or {})
        self.user_agent = user_agent

    def __repr__(self) -> str:
        return f"Pusher({self.server_address!r})"

    def headers(self) -> dict[str, str]:
        """Every header of an upload (without the length)."""
        headers = {
            "content-type": "application/proto",
            "content-encoding": "gzip",
            "user-agent": self.user_agent,
        }
        if self._username or self._password:
            token = f"{self._username}:{self._password}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        if self.tenant_id:
            headers["x-scope-orgid"] = self.tenant_id
        headers.update(self._extra)
        return headers

    def push(self, body: bytes, timeout: float) -> None:
        """Upload one ``PushRequest``; raises :class:`PushError` unless the server says 2xx."""
        parts = urlsplit(self.server_address)
        path = parts.path.rstrip("/") + PATH
        payload = gzip.compress(body, compresslevel=6)
        try:
            if parts.scheme == "https":
                status, detail = self._https(
                    parts.hostname or "", parts.port, path, payload, timeout
                )
            else:
                status, detail = self._http(
                    parts.hostname or "127.0.0.1", parts.port or 80, path, payload, timeout
                )
        except (OSError, ValueError) as exc:
            raise PushError(f"{self.server_address}: {exc}") from exc
        if not 200 <= status < 300:
            text = detail.decode("utf-8", "replace").strip()
            raise PushError(f"{self.server_address} answered {status}: {text}")

    def _http(
        self, host: str, port: int, path: str, payload: bytes, timeout: float
    ) -> tuple[int, bytes]:
        headers = {"host": host if port == 80 else f"{host}:{port}", **self.headers()}
        headers["content-length"] = str(len(payload))
        headers["connection"] = "close"
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(head.encode("latin-1") + b"\r\n" + payload)
            response = bytearray()
            while b"\r\n\r\n" not in response and len(response) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                response += chunk
        line = bytes(response).split(b"\r\n", 1)[0].split()
        if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
            raise ValueError(f"not an HTTP response: {bytes(response[:80])!r}")
        return int(line[1]), bytes(response).partition(b"\r\n\r\n")[2][:512]

    def _https(
        self, host: str, port: int | None, path: str, payload: bytes, timeout: float
    ) -> tuple[int, bytes]:
        import http.client

        connection = http.client.HTTPSConnection(host, port, timeout=timeout)
        try:
            connection.request("POST", path, body=payload, headers=self.headers())
            response = connection.getresponse()
            return response.status, response.read(512)
        except http.client.HTTPException as exc:
            raise ValueError(str(exc)) from exc
        finally:
            connection.close()
