"""Run a real server in a subprocess for end-to-end tests: ``python -m <args>`` from the root."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from tests.support.servers import ROOT, free_port
from tests.support.servers import serving as serving_command

__all__ = ["ROOT", "assert_labelled", "free_port", "get_concurrently", "serving"]


@contextmanager
def serving(args: list[str], port: int, *, timeout: float = 20.0, **env: str) -> Iterator[str]:
    """Start ``python -m <args>`` from the repository root; yield its base URL; always kill it."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    argv = [sys.executable, "-m", *args]
    with serving_command(argv, port=port, env=environ, timeout=timeout) as server:
        yield server.url


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
