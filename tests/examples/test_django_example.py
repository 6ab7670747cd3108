"""The Django example under an ASGI server (daphne, else uvicorn) and under gunicorn (WSGI)."""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.examples import (
    EXAMPLES,
    agent_env,
    assert_own_profiles,
    free_port,
    get_concurrently,
    interleaved,
    serving,
    warm_up,
)

if TYPE_CHECKING:
    from span_profiles.receiver.web.server import Receiver

pytest.importorskip("django")
pytest.importorskip("httpx")

pytestmark = [pytest.mark.profiles, pytest.mark.e2e, pytest.mark.sampled]

APP_DIR = EXAMPLES / "django"
OWN = {"/checkout": "burn_checkout", "/search": "burn_search"}
CHILDREN = {"/checkout": "burn_pricing"}
PATHS = interleaved({"/checkout": 8, "/search": 8})


def asgi_server(port: int) -> list[str]:
    """daphne when installed (Django's own ASGI server), else uvicorn."""
    if importlib.util.find_spec("daphne") is not None:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    pytest.importorskip("uvicorn")
    return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]


def test_asgi_each_request_profile_holds_its_own_view(receiver: Receiver, tmp_path: Path) -> None:
    """Under an ASGI server, an async view's (and its child tasks') and a sync view's span profiles hold only their own functions."""
    port = free_port()
    argv = [*asgi_server(port), "shop.asgi:application"]
    log = tmp_path / "asgi.log"
    with serving(argv, cwd=APP_DIR, port=port, env=agent_env(receiver.url), log=log) as server:
        served = get_concurrently(server.url, PATHS)
        server.stop(signal.SIGINT)
    assert_own_profiles(receiver.db_path, served, OWN, service="example-django", children=CHILDREN)


def test_gunicorn_wsgi_each_request_profile_holds_its_own_view(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Under gunicorn gthread (WSGI, two workers), async views run via async_to_sync and sync views each keep only their own functions."""
    pytest.importorskip("gunicorn")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "shop.wsgi:application"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    log = tmp_path / "gunicorn.log"
    with serving(argv, cwd=APP_DIR, port=port, env=agent_env(receiver.url), log=log) as server:
        warm_up(server.url, workers=2)
        served = get_concurrently(server.url, PATHS)
        # SIGTERM is gunicorn's graceful stop; workers exit normally, so the agent flushes.
        server.stop(signal.SIGTERM)
    assert_own_profiles(receiver.db_path, served, OWN, service="example-django", children=CHILDREN)
