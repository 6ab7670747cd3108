"""instrument_app names the span from the routes before any middleware or endpoint runs."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi.routing")
httpx = pytest.importorskip("httpx")

from starlette.applications import Starlette  # noqa: E402
from starlette.middleware.base import BaseHTTPMiddleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Mount, Route, Router  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from fastapi import APIRouter, FastAPI  # noqa: E402
from span_profiles.asgi import SpanProfilesMiddleware  # noqa: E402
from span_profiles.fastapi import instrument_app, route_finder  # noqa: E402
from tests.support.asgi import Probe, hex_id, only_span, span_names_applied  # noqa: E402

pytestmark = pytest.mark.anyio


def client(app: Any) -> Any:
    """An httpx client calling ``app`` in the test's own event loop."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class ProbingMiddleware:
    """Pure ASGI middleware inside ours: app code that runs before the router."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.probe("middleware before routing")
        await self.app(scope, receive, send)


async def test_middleware_before_the_router_already_sees_the_route(instrumented: Any) -> None:
    """A middleware inside ours runs before routing, yet its samples carry the template."""
    probe = Probe(instrumented.sink)
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> int:
        probe("endpoint")
        return item_id

    app.add_middleware(ProbingMiddleware, probe=probe)  # added first: inside ours
    instrument_app(app, tracer_provider=instrumented.provider)
    async with client(app) as http:
        assert (await http.get("/items/3")).json() == 3
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /items/{item_id}", count=2)
    assert span_names_applied(instrumented.sink, hex_id(span)) == {"GET /items/{item_id}"}


async def test_a_mounted_router_is_named_by_its_inner_route_only(instrumented: Any) -> None:
    """Mount prefix plus inner template from the start; the Mount alone is never the name."""
    probe = Probe(instrumented.sink)

    async def order(request: Any) -> PlainTextResponse:
        probe("endpoint")
        return PlainTextResponse(str(request.path_params["order_id"]))

    inner = Router(routes=[Route("/orders/{order_id:int}", order)])
    app = Starlette(routes=[Mount("/shop", routes=inner.routes)])
    app.add_middleware(BaseHTTPMiddleware, dispatch=_probing_dispatch(probe))
    instrument_app(app, tracer_provider=instrumented.provider)
    async with client(app) as http:
        assert (await http.get("/shop/orders/5")).text == "5"
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /shop/orders/{order_id}", count=2)
    assert span_names_applied(instrumented.sink, hex_id(span)) == {"GET /shop/orders/{order_id}"}


def _probing_dispatch(probe: Probe) -> Any:
    async def dispatch(request: Any, call_next: Any) -> Any:
        probe("dispatch before routing")
        return await call_next(request)

    return dispatch


async def test_included_routers_and_wrong_methods_match_like_the_router(
    instrumented: Any,
) -> None:
    """include_router routes are found; a wrong method names the route, as the router does."""
    app = FastAPI()
    api = APIRouter(prefix="/api")
    v1 = APIRouter(prefix="/v1")

    @api.get("/users/{name}")
    async def user(name: str) -> str:
        return name

    @v1.get("/orders/{order_id}")
    async def order(order_id: int) -> int:
        return order_id

    api.include_router(v1)
    app.include_router(api)
    find = route_finder(app)
    scope = {"type": "http", "method": "GET", "path": "/api/users/x", "root_path": ""}
    assert find(scope) == "/api/users/{name}"
    assert find({**scope, "path": "/api/v1/orders/3"}) == "/api/v1/orders/{order_id}"
    assert find({**scope, "method": "DELETE"}) == "/api/users/{name}"
    assert find({**scope, "path": "/nothing"}) is None
    instrument_app(app, tracer_provider=instrumented.provider)
    async with client(app) as http:
        assert (await http.delete("/api/users/x")).status_code == 405
        assert (await http.get("/nothing")).status_code == 404
        assert (await http.get("/api/v1/orders/3")).json() == 3
    names = sorted(s.name for s in instrumented.exporter.get_finished_spans())
    assert names == ["DELETE /api/users/{name}", "GET", "GET /api/v1/orders/{order_id}"]


async def test_routes_added_after_instrumenting_are_found(instrumented: Any) -> None:
    """The finder reads the routes per request, so late routes are named up front too."""
    probe = Probe(instrumented.sink)
    app = FastAPI()
    app.add_middleware(ProbingMiddleware, probe=probe)
    instrument_app(app, tracer_provider=instrumented.provider)

    @app.get("/late/{n}")
    async def late(n: int) -> int:
        return n

    async with client(app) as http:
        await http.get("/late/1")
    probe.assert_all(only_span(instrumented.exporter), "GET /late/{n}", count=1)


async def test_add_middleware_with_a_route_finder(instrumented: Any) -> None:
    """add_middleware(SpanProfilesMiddleware, find_route=route_finder(app)) names up front."""
    probe = Probe(instrumented.sink)
    app = FastAPI()

    @app.get("/a/{x}")
    async def a(x: str) -> str:
        return x

    app.add_middleware(ProbingMiddleware, probe=probe)
    app.add_middleware(
        SpanProfilesMiddleware, tracer_provider=instrumented.provider, find_route=route_finder(app)
    )
    async with client(app) as http:
        await http.get("/a/b")
    probe.assert_all(only_span(instrumented.exporter), "GET /a/{x}", count=1)
