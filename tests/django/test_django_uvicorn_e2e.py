"""End to end: a Django ASGI app under a real uvicorn server labels 20 concurrent requests."""

from __future__ import annotations

import pytest

pytest.importorskip("django.conf")
pytest.importorskip("uvicorn.main")
pytest.importorskip("httpx")

from tests.support.app_servers import (
    assert_labelled,
    free_port,
    get_concurrently,
    serving,
)

pytestmark = pytest.mark.e2e


def test_concurrent_async_and_sync_views_under_uvicorn() -> None:
    """Async views and sync views (asgiref threads) each see only their own span's labels."""
    port = free_port()
    args = ["uvicorn", "tests.support.apps.django_asgi:application", "--host", "127.0.0.1"]
    with serving([*args, "--port", str(port), "--log-level", "warning"], port) as url:
        bodies = get_concurrently(url, [f"/async/{i}" for i in range(20)])
        assert_labelled(bodies, "GET async/<int:pk>")
        bodies = get_concurrently(url, [f"/sync/{i}" for i in range(20)])
        assert_labelled(bodies, "GET sync/<int:pk>")
