"""The Flask example under gunicorn's threaded workers with a real sampler (started in post_fork)."""

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
    warm_up,
)

if TYPE_CHECKING:
    from span_profiles.receiver.web.server import Receiver

pytest.importorskip("flask")
pytest.importorskip("gunicorn")
pytest.importorskip("httpx")

pytestmark = [pytest.mark.profiles, pytest.mark.e2e, pytest.mark.sampled]

APP_DIR = EXAMPLES / "flask"


def test_gunicorn_each_request_profile_holds_its_own_view(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Under gunicorn gthread (two forked workers), each request's span profile, thread-pool jobs included, holds only its own view's functions."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    log = tmp_path / "gunicorn.log"
    with serving(argv, cwd=APP_DIR, port=port, env=agent_env(receiver.url), log=log) as server:
        warm_up(server.url, workers=2)
        served = get_concurrently(server.url, interleaved({"/checkout": 8, "/search": 8}))
        # SIGTERM is gunicorn's graceful stop; workers exit normally, so the agent flushes.
        server.stop(signal.SIGTERM)
    print(
        assert_own_profiles(
            receiver.db_path,
            served,
            {"/checkout": "burn_checkout", "/search": "burn_search"},
            service="example-flask",
            children={"/checkout": "burn_pricing"},
        )
    )
