"""span_profiles.fastapi: instrument_app on FastAPI apps, async and sync code paths."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

# A submodule: without FastAPI, "fastapi" would import this tests/fastapi directory.
pytest.importorskip("fastapi.routing")
httpx = pytest.importorskip("httpx")

from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from span_profiles import SettingsError  # noqa: E402
from span_profiles.asgi import SpanProfilesMiddleware  # noqa: E402
from span_profiles.fastapi import instrument_app  # noqa: E402
from tests.support.asgi import Probe, only_span  # noqa: E402

pytestmark = pytest.mark.anyio

ITEM = "GET /items/{item_id}"


def make_app(probe: Probe, instrumented: Any) -> FastAPI:
    """A FastAPI app probing labels in endpoints, dependencies and background tasks."""
    app = FastAPI()

    async def async_dependency() -> str:
        await anyio.sleep(0)
        probe("async dependency")
        return "a"

    def sync_dependency() -> str:
        probe("sync dependency")
        return "s"

    @app.get("/items/{item_id}")
    async def read_item(
        item_id: int,
        # Default-value style: string annotations could not name these local functions.
        a: str = Depends(async_dependency),
        s: str = Depends(sync_dependency),
    ) -> dict[str, Any]:
        probe("async endpoint")
        await anyio.sleep(0.001)
        probe("async endpoint after sleep")
        return {"item_id": item_id}

    @app.get("/sync/{item_id}")
    def read_sync(item_id: int) -> dict[str, int]:
        probe("sync endpoint")
        return {"thread": threading.get_ident()}

    @app.post("/tasks/{name}")
    async def add_task(name: str, tasks: BackgroundTasks) -> dict[str, str]:
        async def async_task() -> None:
            await anyio.sleep(0.001)
            probe("async background task")

        def sync_task() -> None:
            probe("sync background task")

        tasks.add_task(async_task)
        tasks.add_task(sync_task)
        return {"queued": name}

    instrument_app(app, tracer_provider=instrumented.provider)
    return app


def client(app: Any) -> Any:
    """An httpx client calling ``app`` in the test's own event loop."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_endpoint_and_dependencies_show_the_route_template(instrumented: Any) -> None:
    """Async and sync dependencies and the endpoint all carry the request span and template."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, instrumented)) as http:
        response = await http.get("/items/42")
    assert response.json() == {"item_id": 42}
    span = only_span(instrumented.exporter)
    assert span.name == ITEM
    probe.assert_all(span, ITEM, count=4)
    assert {s.where for s in probe.seen} == {
        "async dependency",
        "sync dependency",
        "async endpoint",
        "async endpoint after sleep",
    }


async def test_sync_endpoint_runs_labelled_in_a_thread(instrumented: Any) -> None:
    """A sync endpoint runs in a worker thread that shows the request's labels."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, instrumented)) as http:
        response = await http.get("/sync/1")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /sync/{item_id}", count=1)
    assert probe.seen[0].thread == response.json()["thread"] != threading.get_ident()


async def test_background_tasks_carry_the_request_labels(instrumented: Any) -> None:
    """Async and sync background tasks run inside the still-open request span."""
    probe = Probe(instrumented.sink)
    async with client(make_app(probe, instrumented)) as http:
        await http.post("/tasks/x")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "POST /tasks/{name}", count=2)


async def test_instrument_app_is_idempotent(instrumented: Any) -> None:
    """Calling instrument_app twice adds the middleware once and still gives one span."""
    probe = Probe(instrumented.sink)
    app = make_app(probe, instrumented)
    instrument_app(app, tracer_provider=instrumented.provider)
    assert sum(m.cls is SpanProfilesMiddleware for m in app.user_middleware) == 1
    async with client(app) as http:
        await http.get("/items/1")
    assert only_span(instrumented.exporter).name == ITEM


async def test_add_middleware_directly_works(instrumented: Any) -> None:
    """app.add_middleware(SpanProfilesMiddleware) is equivalent to instrument_app."""
    probe = Probe(instrumented.sink)
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: str) -> str:
        probe("endpoint")
        return user_id

    app.add_middleware(SpanProfilesMiddleware, tracer_provider=instrumented.provider)
    async with client(app) as http:
        await http.get("/users/abc")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /users/{user_id}", count=1)


def test_instrument_app_rejects_a_bad_setting_immediately() -> None:
    """instrument_app validates its options before the first request."""
    with pytest.raises(SettingsError, match="sample_rate"):
        instrument_app(FastAPI(), sample_rate=-1)
