"""The Starlette app in process (httpx.ASGITransport, every anyio backend): routes and error shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the receiver extra is not installed")

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from span_profiles.receiver import ProfileReader, ProfileStore, Receiver, create_app
from span_profiles.receiver.ingest.decode import encode_pprof, encode_push_request
from tests.support.receiver import sample, series

PUSH = "/push.v1.PusherService/Push"

pytestmark = pytest.mark.anyio


async def _hello(request: Request) -> PlainTextResponse:
    reader: ProfileReader = request.app.state.reader
    return PlainTextResponse(f"hello {len(reader.services())}")


@pytest.fixture
async def client(db_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with one extra route at ``/``."""
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        app = create_app(store, reader=reader, extra_routes=[Route("/", _hello)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_extra_routes_share_the_port_and_the_store(client: httpx.AsyncClient) -> None:
    """A route passed through extra_routes is served next to ingest (before the UI's) and sees
    what was stored through the app's reader."""
    body = encode_push_request(
        [(series([sample(["f"])]).labels, [encode_pprof(series([sample(["f"])]).profiles[0])])]
    )
    assert (
        await client.post(PUSH, content=body, headers={"content-type": "application/proto"})
    ).status_code == 200
    reply = await client.get("/")
    assert reply.status_code == 200
    assert reply.text == "hello 1"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "GET"])
async def test_wrong_method_is_a_405_connect_error(client: httpx.AsyncClient, method: str) -> None:
    """Every method but POST on the push path gets 405 with the Connect error and an Allow header."""
    reply = await client.request(method, PUSH)
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    if method != "HEAD":
        assert reply.headers["content-type"] == "application/json"
        assert json.loads(reply.content)["code"] == "unimplemented"


async def test_unknown_path_is_a_404_connect_error(client: httpx.AsyncClient) -> None:
    """An unknown path gets 404 with the Connect error naming the path."""
    reply = await client.post("/push.v2/Nope", content=b"")
    assert reply.status_code == 404
    assert reply.json() == {"code": "unimplemented", "message": "no such endpoint '/push.v2/Nope'"}


def test_remote_address_needs_the_flag(db_path: Path) -> None:
    """A non-loopback address is refused unless allow_remote=True (there is no authentication)."""
    with pytest.raises(ValueError, match="allow_remote"):
        Receiver("0.0.0.0", 0, db_path)
    with pytest.raises(ValueError, match="allow_remote"):
        Receiver("192.0.2.1", 0, db_path)
    Receiver("::1", 0, db_path)
    Receiver("localhost", 0, db_path)
    Receiver("0.0.0.0", 0, db_path, allow_remote=True)
