"""Drive a WSGI app in process as a server does: one request, its body iterated then closed."""

from __future__ import annotations

import wsgiref.util
from typing import Any

Environ = dict[str, Any]


class Response:
    """What the server saw: status, headers and body."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.body = b""


def call(
    wsgi_app: Any, path: str = "/items/42", *, method: str = "GET", **headers: str
) -> Response:
    """One request, as a WSGI server makes it (body iterated, then closed)."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "q=1",
        "HTTP_HOST": "testserver",
        "HTTP_USER_AGENT": "parity",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "RAW_URI": f"{path}?q=1",
    }
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    wsgiref.util.setup_testing_defaults(environ)
    response = Response()

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        response.status = status
        response.headers = response_headers
        return lambda data: None

    iterable = wsgi_app(environ, start_response)
    try:
        for chunk in iterable:
            response.body += chunk
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return response
