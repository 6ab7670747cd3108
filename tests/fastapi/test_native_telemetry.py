"""FastAPI's built-in telemetry: its span is named at birth and labels the whole request.

FastAPI (0.160+) starts its SERVER span outside the user middleware, named by the method alone,
and ends it at the last body message, before ``yield`` dependencies are torn down and background
tasks run. ``instrument_app`` adopts that span: no label ever shows the bare method, and the
teardown and background work still carry the request's labels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

pytest.importorskip("fastapi.routing")
httpx = pytest.importorskip("httpx")

from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from span_profiles.fastapi import instrument_app  # noqa: E402
from tests.support.asgi import Probe, server_spans, span_names_applied  # noqa: E402

pytestmark = pytest.mark.anyio

if not hasattr(FastAPI(), "_native_telemetry"):  # pragma: no cover - older FastAPI
    pytest.skip("this FastAPI has no built-in telemetry", allow_module_level=True)


def make_app(probe: Probe, instrumented: Any, *, operation_spans: bool) -> FastAPI:
    """An app with FastAPI's telemetry on, probing every phase of a request."""
    app = FastAPI(
        telemetry={
            "tracer_provider": instrumented.provider,
            "operation_spans": operation_spans,
            "metrics": False,
            "logs": False,
        }
    )

    async def session() -> AsyncIterator[str]:
        probe("dependency setup")
        yield "session"
        # After the response: FastAPI's span has ended by now.
        await anyio.sleep(0)
        probe("dependency teardown")

    @app.get("/items/{item_id}")
    async def read_item(
        item_id: int, tasks: BackgroundTasks, db: str = Depends(session)
    ) -> dict[str, int]:
        probe("endpoint")

        async def later() -> None:
            await anyio.sleep(0.001)
            probe("background task")

        tasks.add_task(later)
        return {"item_id": item_id}

    instrument_app(app, tracer_provider=instrumented.provider)
    return app


@pytest.mark.parametrize("operation_spans", [False, True], ids=["plain", "operation-spans"])
async def test_the_whole_request_carries_the_route_and_its_labels(
    instrumented: Any, operation_spans: bool
) -> None:
    """One SERVER span (FastAPI's), every phase labelled with it, never a bare ``GET``."""
    probe = Probe(instrumented.sink)
    app = make_app(probe, instrumented, operation_spans=operation_spans)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for item in (1, 2):
            response = await c.get(f"/items/{item}")
            assert response.json() == {"item_id": item}
    spans = server_spans(instrumented.exporter)
    assert [s.name for s in spans] == ["GET /items/{item_id}"] * 2
    assert [s.instrumentation_scope and s.instrumentation_scope.name for s in spans] == [
        "fastapi"
    ] * 2
    # Each request's phases carry its own span's labels.
    phases = ["dependency setup", "endpoint", "dependency teardown", "background task"]
    for i, span in enumerate(spans):
        seen = probe.seen[i * 4 : (i + 1) * 4]
        assert sorted(s.where for s in seen) == sorted(phases)
        expected = {"span_id": format(span.context.span_id, "016x"), "span_name": span.name}
        assert [s.labels for s in seen] == [expected] * 4
        # From the first label change on: the route template, never the method alone.
        assert span_names_applied(instrumented.sink, expected["span_id"]) == {span.name}
    assert instrumented.sink.current() == {}


async def test_an_unrouted_request_keeps_the_bare_method(instrumented: Any) -> None:
    """A 404 has no route: FastAPI's span keeps its method name, and nothing breaks."""
    probe = Probe(instrumented.sink)
    app = make_app(probe, instrumented, operation_spans=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/nowhere")).status_code == 404
    assert [s.name for s in server_spans(instrumented.exporter)] == ["GET"]
    assert instrumented.sink.current() == {}
