"""Drive an ASGI app in process as a server does: one HTTP request or websocket, the messages sent."""

from __future__ import annotations

from typing import Any

import anyio

Message = dict[str, Any]


def http_scope(
    path: str, *, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> Message:
    """An HTTP scope as uvicorn builds it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"q=1",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"user-agent", b"parity"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def call(app: Any, scope: Message, incoming: list[Message] | None = None) -> list[Message]:
    """Run one connection; return the messages the app sent."""
    queue = list(incoming if incoming is not None else [{"type": "http.request", "body": b""}])
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def get(app: Any, path: str = "/items/42", **kwargs: Any) -> list[Message]:
    """One HTTP request."""
    return await call(app, http_scope(path, **kwargs))


def start_headers(sent: list[Message]) -> list[tuple[bytes, bytes]]:
    """The response headers of an HTTP response (or a websocket accept)."""
    for message in sent:
        if message["type"] in ("http.response.start", "websocket.accept"):
            return list(message.get("headers") or [])
    raise AssertionError(f"no response start in {sent}")


async def websocket(app: Any) -> list[Message]:
    """One websocket connection that echoes one message."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws/lobby",
        "raw_path": b"/ws/lobby",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
    }
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    return await call(app, scope, incoming)
