"""The Flask app the gunicorn end-to-end test serves: views report their own labels."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from flask import Flask
from span_profiles import PROFILE_ID_ATTRIBUTE
from span_profiles.flask import SpanProfiles
from span_profiles.testing import RecordingSink

provider = TracerProvider()
sink = RecordingSink()
span_profiles.instrument(tracer_provider=provider, sink=sink)

app = Flask(__name__)
SpanProfiles(app, tracer_provider=provider)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, Any]:
    """Let the other request threads run, then report this thread's labels."""
    time.sleep(0.05)
    span: Any = trace.get_current_span()
    return {
        "labels": sink.current(),
        "span_id": format(span.get_span_context().span_id, "016x"),
        "profile_id": span.attributes.get(PROFILE_ID_ATTRIBUTE),
    }
