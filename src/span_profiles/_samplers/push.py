"""Send profiles to a Pyroscope server (or ``span-profiles serve``) the way pyroscope-io does.

``POST <server_address>/push.v1.PusherService/Push``, ``content-type: application/proto``,
``content-encoding: gzip``, body a ``PushRequest`` (:func:`.pprof.push_request`); basic auth,
``X-Scope-OrgID`` for the tenant and any extra headers, as the agent's settings say. One attempt
per upload with a timeout: a refused or failed upload drops that window, as the agent does.

Standard library only (``http.client``): this module runs in the sampler process.
"""

from __future__ import annotations

import base64
import gzip
import http.client
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["PATH", "PushError", "Pusher"]

PATH = "/push.v1.PusherService/Push"


class PushError(Exception):
    """An upload failed: the server refused it or could not be reached."""


@dataclass(frozen=True)
class Pusher:
    """Where and how to upload."""

    server_address: str
    basic_auth_username: str = ""
    basic_auth_password: str = field(default="", repr=False)
    tenant_id: str = ""
    http_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    user_agent: str = "span-profiles"

    def headers(self) -> dict[str, str]:
        """Every header of an upload."""
        headers = {
            "content-type": "application/proto",
            "content-encoding": "gzip",
            "user-agent": self.user_agent,
        }
        if self.basic_auth_username or self.basic_auth_password:
            token = f"{self.basic_auth_username}:{self.basic_auth_password}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        if self.tenant_id:
            headers["x-scope-orgid"] = self.tenant_id
        headers.update(self.http_headers)
        return headers

    def push(self, body: bytes, timeout: float) -> None:
        """Upload one ``PushRequest``; raises :class:`PushError` unless the server says 2xx."""
        parts = urlsplit(self.server_address)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        host = parts.hostname or "127.0.0.1"
        connection = connection_class(host, parts.port, timeout=timeout)
        try:
            connection.request(
                "POST",
                parts.path.rstrip("/") + PATH,
                body=gzip.compress(body, compresslevel=6),
                headers=self.headers(),
            )
            response = connection.getresponse()
            detail = response.read(512)
        except (OSError, http.client.HTTPException) as exc:
            raise PushError(f"{self.server_address}: {exc}") from exc
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            text = detail.decode("utf-8", "replace").strip()
            raise PushError(f"{self.server_address} answered {response.status}: {text}")
