"""End to end: a Flask app under gunicorn's threaded worker labels 20 concurrent requests."""

from __future__ import annotations

import pytest

pytest.importorskip("flask.app")
pytest.importorskip("gunicorn.app.wsgiapp")
pytest.importorskip("httpx")

from tests.support.app_servers import (
    assert_labelled,
    free_port,
    get_concurrently,
    serving,
)

pytestmark = pytest.mark.e2e


def test_concurrent_requests_under_gunicorn_gthread() -> None:
    """Each request thread of a gthread worker shows only its own request's labels."""
    port = free_port()
    args = [
        "gunicorn",
        "--worker-class",
        "gthread",
        "--threads",
        "20",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "tests.support.apps.flask_app:app",
    ]
    with serving(args, port) as url:
        bodies = get_concurrently(url, [f"/items/{i}" for i in range(20)])
    assert_labelled(bodies, "GET /items/<int:item_id>")
