"""Run a real server in a subprocess for end-to-end tests: loopback, free port, bounded, killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(args: list[str], port: int, *, timeout: float = 20.0, **env: str) -> Iterator[str]:
    """Start ``python -m <args>`` from the repository root; yield its base URL; always kill it."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited with {process.returncode}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not listen on {port} within {timeout}s")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        # The whole session: gunicorn's workers too.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def get_concurrently(url: str, paths: list[str], *, timeout: float = 10.0) -> list[Any]:
    """GET every path at once (one thread each); return the decoded JSON bodies."""
    import httpx

    def get(path: str) -> Any:
        response = httpx.get(url + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(get, paths))


def assert_labelled(bodies: list[Any], span_name: str) -> None:
    """Each body reports labels equal to its own span, and the span's profile id."""
    span_ids = set()
    for body in bodies:
        assert body["labels"] == {"span_id": body["span_id"], "span_name": span_name}, body
        assert body["profile_id"] == body["span_id"], body
        span_ids.add(body["span_id"])
    assert len(span_ids) == len(bodies)
