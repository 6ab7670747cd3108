"""The FastAPI example under uvicorn (asyncio) and hypercorn (trio) with a real sampler."""

from __future__ import annotations

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
)

if TYPE_CHECKING:
    from span_profiles.receiver.web.server import Receiver

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

pytestmark = [pytest.mark.profiles, pytest.mark.e2e, pytest.mark.sampled]

APP_DIR = EXAMPLES / "fastapi"
OWN = {"/checkout": "burn_checkout", "/search": "burn_search"}
CHILDREN = {"/checkout": "burn_pricing"}
# 150 ms of CPU per request: >= 5 samples each at 100 Hz even when requests share the GIL.
PATHS = interleaved({"/checkout?ms=150": 8, "/search?ms=150": 8})


def test_uvicorn_each_request_profile_holds_its_own_endpoint(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Under uvicorn, an async endpoint's (and its child tasks') and a sync endpoint's span profiles hold only their own functions."""
    pytest.importorskip("uvicorn")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log"]
    log = tmp_path / "uvicorn.log"
    with serving(argv, cwd=APP_DIR, port=port, env=agent_env(receiver.url), log=log) as server:
        served = get_concurrently(server.url, PATHS)
        server.stop(signal.SIGINT)
    print(
        assert_own_profiles(
            receiver.db_path, served, OWN, service="example-fastapi", children=CHILDREN
        )
    )


def test_hypercorn_trio_each_request_profile_holds_its_own_endpoint(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Under hypercorn's trio worker (Starlette on anyio), each request's span profile holds only its own functions."""
    pytest.importorskip("hypercorn")
    pytest.importorskip("trio")
    port = free_port()
    argv = [sys.executable, "-m", "hypercorn", "app:app", "--worker-class", "trio"]
    argv += ["--bind", f"127.0.0.1:{port}"]
    log = tmp_path / "hypercorn.log"
    with serving(argv, cwd=APP_DIR, port=port, env=agent_env(receiver.url), log=log) as server:
        served = get_concurrently(server.url, PATHS)
        server.stop(signal.SIGINT)
    print(
        assert_own_profiles(
            receiver.db_path, served, OWN, service="example-fastapi", children=CHILDREN
        )
    )
