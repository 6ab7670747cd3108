"""The exit flush is bounded by ``shutdown_timeout`` against a dead receiver (real agent, real
servers): what is dropped is said in one line, and a SIGTERM'd worker exits on its own."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.servers import ROOT, agent_env

pytestmark = [pytest.mark.agent, pytest.mark.e2e]


@pytest.fixture
def dead_receiver() -> Iterator[str]:
    """A receiver that accepts connections and never answers: each upload waits for its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _env(**extra: str) -> dict[str, str]:
    return agent_env(PYTHONPATH=str(ROOT), **extra)


@pytest.mark.parametrize(
    "sampler",
    [
        "pyroscope",
        pytest.param(
            "builtin",
            marks=pytest.mark.skipif(
                sys.version_info < (3, 14), reason="the built-in sampler needs CPython 3.14+"
            ),
        ),
    ],
)
def test_script_exit_is_bounded_and_says_what_was_dropped(dead_receiver: str, sampler: str) -> None:
    """Queued windows against a dead receiver: exit after ~shutdown_timeout, with one warning."""
    script = textwrap.dedent(
        """
        import logging, sys, time
        logging.basicConfig(level=logging.WARNING)
        import span_profiles
        assert span_profiles.start_profiler(server_address=sys.argv[1], upload_interval=1,
                                            shutdown_timeout=1.5, application_name="exit",
                                            sampler=sys.argv[2])
        end = time.process_time() + 2.5
        while time.process_time() < end:
            pass
        print(time.monotonic(), flush=True)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, dead_receiver, sampler],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    exit_took = time.monotonic() - float(done.stdout.split()[-1])
    dropped = [line for line in done.stderr.splitlines() if "dropped what" in line]
    assert len(dropped) == 1, done.stderr
    assert "shutdown_timeout=1.5 s" in dropped[0]
    assert dead_receiver in dropped[0]
    # Unbounded, the agent waits 10 s per queued window; bounded, the exit is near 1.5 s.
    assert exit_took < 10, (exit_took, time.monotonic() - started)


def _wait_for(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_sigterm_worker_exits_within_the_graceful_timeout(dead_receiver: str, server: str) -> None:
    """A worker with queued windows for a dead receiver, SIGTERM'd, exits on its own (no SIGKILL
    from gunicorn after its graceful timeout), and logs what it dropped."""
    pytest.importorskip(server)
    port = _free_port()
    app = "tests.support.apps.burn_app:app"
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    else:
        command = [
            sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", "1",
            "-k", "uvicorn.workers.UvicornWorker", "--graceful-timeout", "8",
        ]  # fmt: skip
    env = _env(
        PYROSCOPE_SERVER_ADDRESS=dead_receiver,
        PYROSCOPE_UPLOAD_INTERVAL="1",
        SPAN_PROFILES_SHUTDOWN_TIMEOUT="2",
        BURN_MS="50",
    )
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/placement", process)
        for _ in range(40):  # two seconds of samples: several windows queue up
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/burn", timeout=10) as response:
                response.read()
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # uvicorn re-raises the SIGTERM it handled once it has shut down: -SIGTERM is its own exit.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "SIGKILL" not in output, output
    dropped = [line for line in output.splitlines() if "dropped what was not uploaded" in line]
    assert len(dropped) == 1, output
    # gunicorn's graceful timeout is 8 s here; the flush gives up after 2 s.
    assert took < 8, (took, output)
