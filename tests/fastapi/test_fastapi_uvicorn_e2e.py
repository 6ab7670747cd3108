"""End to end: a FastAPI app under a real uvicorn server labels 20 concurrent requests."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi.routing")
pytest.importorskip("uvicorn.main")
pytest.importorskip("httpx")

from tests.support.app_servers import (
    assert_labelled,
    free_port,
    get_concurrently,
    serving,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_concurrent_requests_under_uvicorn(loop: str) -> None:
    """Every one of 20 concurrent async and sync requests sees exactly its own span's labels."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    args = [
        "uvicorn",
        "tests.support.apps.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving([*args, "--loop", loop, "--log-level", "warning"], port) as url:
        bodies = get_concurrently(url, [f"/items/{i}" for i in range(20)])
        assert_labelled(bodies, "GET /items/{item_id}")
        bodies = get_concurrently(url, [f"/sync/{i}" for i in range(20)])
        assert_labelled(bodies, "GET /sync/{item_id}")
