"""The loop's work for a connection carries the labels of the request it serves, or none.

Client connections answer the request that wrote to them last; server connections read with no
labels (the next request has no span yet); loop work between task steps shows nothing. Socket
pairs stand in for the network (no server socket is bound), on the stdlib loop, with eager tasks
and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace

from span_profiles._core import engine
from span_profiles._hooks import transports
from tests.support.labels import labels_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def asyncio_only(backend_id: str) -> None:
    if backend_id == "trio":
        pytest.skip("asyncio transports")


def _shown() -> dict[str, str]:
    return dict(engine.shown.get(__import__("threading").get_ident(), engine.EMPTY))


class Client(asyncio.Protocol):
    """A client protocol that notes the labels each read runs under."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.reads: list[tuple[bytes, dict[str, str]]] = []
        self._waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append((data, _shown()))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(data)

    async def ask(self, query: bytes) -> bytes:
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(query)
        return await self._waiter


class Server(asyncio.Protocol):
    """Answers each read with ``ok:<data>`` a moment later, from the loop (not from a task)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.reads: list[tuple[bytes, dict[str, str], Any]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append((data, _shown(), trace.get_current_span()))
        loop = asyncio.get_running_loop()
        loop.call_later(0.005, self._reply, b"ok:" + data, context=contextvars.Context())

    def _reply(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


async def _pair() -> tuple[Client, Server]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    _, client = await loop.create_connection(Client, sock=ours)
    _, server = await loop.connect_accepted_socket(Server, sock=theirs)
    return client, server


@pytest.fixture
async def pairs() -> AsyncIterator[list[tuple[Client, Server]]]:
    """Connections a test opens, closed while its loop still runs."""
    made: list[tuple[Client, Server]] = []
    yield made
    for client, server in made:
        client.transport.close()
        server.transport.close()
    await asyncio.sleep(0.01)


async def test_a_reply_is_read_under_the_request_that_asked(
    instrumented: Any, asyncio_only: None, pairs: list[Any]
) -> None:
    """Two requests on two connections, interleaved: each reply is read under its asker."""
    tracer = instrumented.tracer
    pairs.append(await _pair())
    pairs.append(await _pair())

    async def request(name: str, client: Client) -> dict[str, str]:
        with tracer.start_as_current_span(name) as span:
            for i in range(5):
                assert await client.ask(f"{name}-{i}".encode()) == f"ok:{name}-{i}".encode()
            return labels_of(span)

    async with _Gather() as tg:
        first = tg.create_task(request("first", pairs[0][0]))
        second = tg.create_task(request("second", pairs[1][0]))
    for (client, server), labels in ((pairs[0], first.result()), (pairs[1], second.result())):
        assert [seen for _, seen in client.reads] == [labels] * 5
        # The server's side of a connection reads before any span of its request exists.
        assert [seen for _, seen, _ in server.reads] == [{}] * 5


async def test_the_last_writer_owns_the_connection_and_an_ended_one_nothing(
    instrumented: Any, asyncio_only: None, pairs: list[Any]
) -> None:
    """A pooled connection: opened under one request that stays live, used by another; data
    after the user's request ended is read with no labels."""
    tracer = instrumented.tracer
    opened = asyncio.Event()
    done = asyncio.Event()

    async def opener() -> None:
        # Opens the connection and stays live, as a long request that filled a pool would.
        with tracer.start_as_current_span("opener"):
            pairs.append(await _pair())
            opened.set()
            await done.wait()

    task = asyncio.get_running_loop().create_task(opener())
    await opened.wait()
    client, server = pairs[0]
    with tracer.start_as_current_span("user") as user:
        await client.ask(b"q")
        own = labels_of(user)
    server.transport.write(b"unasked")  # arrives after the user's request ended
    while len(client.reads) < 2:
        await asyncio.sleep(0.001)
    done.set()
    await task
    assert client.reads == [(b"ok:q", own), (b"unasked", {})]


async def test_resuming_reading_from_a_request_does_not_leak_it_into_the_next(
    instrumented: Any, asyncio_only: None, pairs: list[Any]
) -> None:
    """A server transport resumed from inside a request reads later data in its own context."""
    pairs.append(await _pair())
    client, server = pairs[0]
    with instrumented.tracer.start_as_current_span("request") as span:
        server.transport.pause_reading()
        server.transport.resume_reading()
        client.transport.write(b"next request")
        while not server.reads:
            await asyncio.sleep(0.001)
    data, shown, current = server.reads[0]
    assert data == b"next request"
    assert shown == {}
    assert current is not span


async def test_asyncpg_style_protocols_are_covered_on_any_path(
    instrumented: Any, asyncio_only: None, monkeypatch: pytest.MonkeyPatch, pairs: list[Any]
) -> None:
    """A protocol class set on its transport by hand (asyncpg's STARTTLS path) is covered once
    its module is imported: its reads show the request that wrote."""

    class Protocol(Client):
        pass

    module = types.ModuleType("asyncpg.protocol.protocol")
    module.Protocol = Protocol  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "asyncpg.protocol.protocol", module)
    with instrumented.tracer.start_as_current_span("root") as root:
        # A local root makes the hook look for asyncpg again.
        assert getattr(Protocol, transports._OWNER_ATTRIBUTE, None) is True
        own = labels_of(root)
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    _, server = await loop.connect_accepted_socket(Server, sock=theirs)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    pg = Protocol()
    pg.connection_made(transport)
    transport.set_protocol(pg)
    pairs.append((pg, server))
    with instrumented.tracer.start_as_current_span("query") as query:
        assert await pg.ask(b"select 1") == b"ok:select 1"
        own = labels_of(query)
    assert pg.reads == [(b"ok:select 1", own)]
    assert isinstance(pg.transport, transports.OwnedTransport)


class _Gather:
    """Like ``asyncio.TaskGroup`` (3.11+): create_task, then wait for all on exit."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> _Gather:
        return self

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self.tasks)
