"""End to end (issue 9): under gunicorn (WSGI) and uvicorn (ASGI) with a real sampler, no sample
of a routed Django request carries a bare method as ``span_name``, earlier middlewares included."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("django.conf")
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

APP = "tests.support.apps.django_routing_app"


def template(path: str) -> str:
    """The span name each served path must carry."""
    return "GET items/<int:pk>" if path.startswith("/items/") else "GET orders/<slug:name>/"


def server_argv(server: str, port: int) -> tuple[list[str], signal.Signals]:
    """The command line of a real server for the app, and its graceful stop signal."""
    if server == "gunicorn":
        pytest.importorskip("gunicorn.app.wsgiapp")
        argv = [sys.executable, "-m", "gunicorn", f"{APP}:application", "--workers", "1"]
        argv += ["--worker-class", "gthread", "--threads", "8", "--bind", f"127.0.0.1:{port}"]
        return argv, signal.SIGTERM
    pytest.importorskip("uvicorn.main")
    argv = [sys.executable, "-m", "uvicorn", f"{APP}:asgi_application", "--host", "127.0.0.1"]
    return [*argv, "--port", str(port), "--log-level", "warning"], signal.SIGINT


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_samples_before_django_resolves_carry_the_route(
    routing_receiver: Receiver, tmp_path: Path, server: str
) -> None:
    """A middleware after ours runs before the resolver; its samples carry the route."""
    port = free_port()
    argv, stop = server_argv(server, port)
    env = agent_env(routing_receiver.url, PYTHONPATH=str(ROOT))
    with serving(argv, cwd=ROOT, port=port, env=env, log=tmp_path / "server.log") as running:
        warm_up(running.url, workers=1)
        paths = [f"/items/{i}" if i % 2 else f"/orders/o{i}/" for i in range(16)]
        served = get_concurrently(running.url, paths)
        running.stop(stop)
    names = assert_routed_samples_named(
        routing_receiver.db_path,
        served,
        template,
        service="e2e-django-routing",
        before_routing="burn_session_middleware",
    )
    print(dict(names))
