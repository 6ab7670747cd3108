"""``instrument_app`` takes OTel's options as ``FastAPIInstrumentor.instrument_app`` does.

The same FastAPI app behind OTel's ASGI middleware (``add_middleware``, "theirs") and behind
``instrument_app`` with the same options ("ours"): span attributes, metrics and hook calls
compare equal; ours is named after the route from the start.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.instrumentation.asgi")

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from fastapi import FastAPI
from span_profiles.fastapi import instrument_app
from tests.support.asgi_client import get
from tests.support.otel_parity import (
    Telemetry,
    attributes,
    same_keys,
    telemetry,
    without_route,
)

__all__ = ["telemetry"]  # fixtures

pytestmark = pytest.mark.anyio


def make_app() -> FastAPI:
    """One templated route and a health check."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    return app


def theirs(t: Telemetry, **options: Any) -> FastAPI:
    """OTel's ASGI middleware added to the app."""
    app = make_app()
    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=t.tracer_provider,
        meter_provider=t.meter_provider,
        **options,
    )
    return app


def ours(t: Telemetry, **options: Any) -> Any:
    """instrument_app with the same options."""
    return instrument_app(
        make_app(), tracer_provider=t.tracer_provider, meter_provider=t.meter_provider, **options
    )


async def test_span_metrics_and_hooks_match(telemetry: Telemetry) -> None:
    """Same attributes, metrics and server_request_hook calls; ours is route-named."""
    calls: dict[str, list[str]] = {"theirs": [], "ours": []}
    await get(
        theirs(
            telemetry, server_request_hook=lambda span, scope: calls["theirs"].append(scope["path"])
        )
    )
    their_span = telemetry.server_span()
    their_points = telemetry.points()
    telemetry.reset()
    fresh = telemetry.with_fresh_meter()
    await get(
        ours(fresh, server_request_hook=lambda span, scope: calls["ours"].append(scope["path"]))
    )
    our_span = telemetry.server_span()
    same_keys(attributes(our_span), attributes(their_span))
    assert our_span.name == "GET /items/{item_id}"
    assert without_route(fresh.points()) == their_points
    assert calls["ours"] == calls["theirs"] == ["/items/42"]
    fresh.meter_provider.shutdown()


@pytest.mark.parametrize(
    "variable", ["OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"]
)
async def test_excluded_urls_from_fastapis_variables(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """The variables FastAPIInstrumentor reads exclude URLs from ours too."""
    monkeypatch.setenv(variable, "healthz")
    app = ours(telemetry)
    await get(app, "/healthz")
    assert telemetry.spans() == []
    await get(app)
    assert len(telemetry.server_spans()) == 1


async def test_default_span_details_beats_the_route(telemetry: Telemetry) -> None:
    """A user's default_span_details names the span even though the route is known up front."""
    await get(ours(telemetry, default_span_details=lambda scope: ("custom", {"x": 1})))
    span = telemetry.server_span()
    assert span.name == "custom"
    assert (span.attributes or {})["http.route"] == "/items/{item_id}"
