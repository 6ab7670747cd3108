"""The FastAPI app the uvicorn end-to-end test serves: handlers report their own labels."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from fastapi import FastAPI
from span_profiles import PROFILE_ID_ATTRIBUTE
from span_profiles.fastapi import instrument_app
from span_profiles.testing import RecordingSink

provider = TracerProvider()
sink = RecordingSink()
span_profiles.instrument(tracer_provider=provider, sink=sink)

app = FastAPI()
instrument_app(app, tracer_provider=provider)


def report() -> dict[str, Any]:
    """The calling thread's labels, and the current span's id and profile id."""
    span: Any = trace.get_current_span()
    return {
        "labels": sink.current(),
        "span_id": format(span.get_span_context().span_id, "016x"),
        "profile_id": span.attributes.get(PROFILE_ID_ATTRIBUTE),
    }


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, Any]:
    """Yield to the other requests, then report."""
    await asyncio.sleep(0.05)
    return report()


@app.get("/sync/{item_id}")
def sync_item(item_id: int) -> dict[str, Any]:
    """Report from the worker thread."""
    return report()
