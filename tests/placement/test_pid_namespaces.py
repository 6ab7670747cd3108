"""Two servers in separate pid namespaces (both see themselves as pid 1, as in containers) end up
with their loops on different CPUs under load: placement follows the loop, not the pid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytestmark = [pytest.mark.agent, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def _unshare_reason() -> str | None:
    """Why the test cannot run here, or ``None`` when it can."""
    if not sys.platform.startswith("linux"):
        return "pid namespaces need Linux"
    if shutil.which("unshare") is None:
        return "the unshare tool (util-linux) is not installed"
    if len(os.sched_getaffinity(0)) < 2:
        return "this process may use one CPU only"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        return f"unshare --pid --fork --mount-proc is refused here (needs root): {probe.stderr!r}"
    load, cpus = os.getloadavg()[0], len(os.sched_getaffinity(0))
    if load > 1.5 * cpus:
        # Every CPU is saturated by other processes: no CPU is better, placement is noise.
        return f"the machine is oversubscribed (load {load:.1f} on {cpus} CPUs)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return bytes(response.read())


@pytest.fixture
def two_servers() -> Iterator[list[int]]:
    """Two uvicorn servers, each alone in a new pid namespace; yields their ports."""
    reason = _unshare_reason()
    if reason is not None:
        pytest.skip(reason)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYROSCOPE_", "SPAN_PROFILES_"))
    }
    env["SPAN_PROFILES_SAMPLER"] = "pyroscope"  # placement is pyroscope-io's (3.14: auto is not)
    env.update(PYTHONPATH=str(ROOT), PYROSCOPE_SERVER_ADDRESS="http://127.0.0.1:9", BURN_MS="30")
    ports = [_free_port(), _free_port()]
    servers = [
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "uvicorn",
             "tests.support.apps.burn_app:app", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for port in ports
    ]  # fmt: skip
    try:
        for port in ports:
            deadline = time.monotonic() + 20
            while True:
                try:
                    _get(port, "/placement")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield ports
    finally:
        for server in servers:
            _terminate_inside(server)
        for server in servers:
            server.wait(timeout=20)


def _terminate_inside(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server inside the namespace: ``unshare --fork`` itself ignores SIGTERM."""
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGTERM)
    if not children:
        server.kill()


# Placement moves a loop only to a CPU that is less busy: when load from outside the test fills
# both CPUs during its 20 s (a benchmark beside CI failed it once on 3.13), no CPU is; a rerun
# after the neighbour is gone tells that from a placement bug, which fails every attempt.
@pytest.mark.flaky(reruns=2, reruns_delay=5)
def test_two_pid_namespaces_under_load_use_different_cpus(two_servers: list[int]) -> None:
    """Both servers busy with CPU-bound requests: within 20 s their loops sit on different CPUs."""
    stop = threading.Event()

    def load(port: int) -> None:
        while not stop.is_set():
            _get(port, "/burn")

    clients = [threading.Thread(target=load, args=(port,)) for port in two_servers for _ in (0, 1)]
    for client in clients:
        client.start()
    seen: list[tuple[object, object]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1)
            first, second = (json.loads(_get(port, "/placement")) for port in two_servers)
            seen.append((first["cpu"], second["cpu"]))
            both = first["cpu"] is not None and second["cpu"] is not None
            if both and first["cpu"] != second["cpu"] and len(seen) >= 3:
                break
    finally:
        stop.set()
        for client in clients:
            client.join()
    final = seen[-1]
    assert None not in final, seen
    assert final[0] != final[1], seen
    print("placements seen each second:", seen)
