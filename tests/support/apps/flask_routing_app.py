"""The Flask app of the routing e2e test: CPU burnt before Flask matches the URL rule.

Opening the session (as a server-side session store would) and a ``before_request`` hook burn
CPU before the view; Flask opens the session before it matches the URL.
"""

from __future__ import annotations

import os
from typing import Any

from flask.sessions import SecureCookieSessionInterface
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from flask import Flask, Response, request
from span_profiles.flask import SpanProfiles
from tests.support.cpu import burn_cpu

SERVICE_NAME = "e2e-flask-routing"


def burn_open_session(ms: float) -> int:
    """The session store's CPU, before Flask matches the URL."""
    return burn_cpu(ms)


def burn_view(ms: float) -> int:
    """The view's own CPU."""
    return burn_cpu(ms)


class SlowSessions(SecureCookieSessionInterface):
    """A session interface that costs CPU to open, as a database-backed one does."""

    def open_session(self, app: Flask, request: Any) -> Any:
        """Burn, then open the cookie session."""
        burn_open_session(25)
        return super().open_session(app, request)


trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME})))

app = Flask(__name__)
app.secret_key = "span-profiles-e2e"
app.session_interface = SlowSessions()
SpanProfiles(app)


@app.after_request
def add_span_id(response: Response) -> Response:
    """Tell the client which span served it."""
    response.headers["x-span-id"] = format(
        trace.get_current_span().get_span_context().span_id, "016x"
    )
    return response


@app.get("/health")
def health() -> dict[str, Any]:
    """Which worker answered."""
    return {"pid": os.getpid()}


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, Any]:
    """Burn in the view."""
    burn_view(25)
    return {"item_id": item_id}


@app.get("/orders/<name>")
def order(name: str) -> dict[str, Any]:
    """Burn in another view."""
    burn_view(25)
    return {"order": name, "query": request.args.get("q", "")}
