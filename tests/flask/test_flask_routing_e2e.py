"""End to end (issue 9): under gunicorn gthread with a real sampler, no sample of a routed Flask
request carries a bare method as ``span_name``, session opening included."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("flask.app")
pytest.importorskip("gunicorn.app.wsgiapp")
pytest.importorskip("httpx")
pytest.importorskip("google.protobuf")

from tests.support.examples import (
    ROOT,
    agent_env,
    free_port,
    get_concurrently,
    serving,
    warm_up,
)
from tests.support.routing import assert_routed_samples_named
from tests.support.routing import routing_receiver as routing_receiver

if TYPE_CHECKING:
    from span_profiles.receiver.web.server import Receiver

pytestmark = [pytest.mark.profiles, pytest.mark.e2e, pytest.mark.sampled]


def template(path: str) -> str:
    """The span name each served path must carry."""
    return "GET /items/<int:item_id>" if path.startswith("/items/") else "GET /orders/<name>"


def test_samples_before_flask_routes_carry_the_rule(
    routing_receiver: Receiver, tmp_path: Path
) -> None:
    """Session opening runs before Flask's URL match; its samples carry the rule all the same."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "tests.support.apps.flask_routing_app:app"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread"]
    argv += ["--threads", "8"]
    log = tmp_path / "gunicorn.log"
    env = agent_env(routing_receiver.url, PYTHONPATH=str(ROOT))
    with serving(argv, cwd=ROOT, port=port, env=env, log=log) as server:
        warm_up(server.url, workers=1)
        paths = [f"/items/{i}" if i % 2 else f"/orders/o{i}?q=x" for i in range(16)]
        served = get_concurrently(server.url, paths)
        server.stop(signal.SIGTERM)
    names = assert_routed_samples_named(
        routing_receiver.db_path,
        served,
        template,
        service="e2e-flask-routing",
        before_routing="burn_open_session",
    )
    print(dict(names))
