"""Run an example app under a real server with the real agent, then check each request's profile.

The servers come from ``tests/support/servers.py`` (subprocess in its own session, loopback, free port,
always killed, a graceful stop whose exit status is checked: the agent flushes its last window at
interpreter exit); this adds the agent's environment, warm-up, traffic, and assertions on the
receiver's database.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from span_profiles.receiver import ProfileReader, Selection
from tests.support import servers
from tests.support.servers import ROOT, Server, free_port

__all__ = [
    "EXAMPLES",
    "ROOT",
    "Served",
    "Server",
    "agent_env",
    "assert_own_profiles",
    "free_port",
    "get_concurrently",
    "interleaved",
    "serving",
    "warm_up",
]

EXAMPLES = ROOT / "examples"
UPLOAD_INTERVAL = "1"
"""Seconds; the agent's smallest interval, so that most windows arrive while the test runs."""


def agent_env(receiver_url: str, **extra: str) -> dict[str, str]:
    """The environment of a server whose agent pushes to ``receiver_url`` every second."""
    return {
        **os.environ,
        "PYROSCOPE_SERVER_ADDRESS": receiver_url,
        "PYROSCOPE_UPLOAD_INTERVAL": UPLOAD_INTERVAL,
        # tests/conftest.py switches the agent off for every test; these servers need it.
        "SPAN_PROFILES_PROFILER": "on",
        **extra,
    }


@contextmanager
def serving(
    argv: Sequence[str], *, cwd: Path, port: int, env: Mapping[str, str], log: Path
) -> Iterator[Server]:
    """An example app under ``argv`` (see :func:`tests.support.servers.serving`), once ``/health`` is 200."""
    with servers.serving(argv, cwd=cwd, port=port, env=env, log=log, ready_path="/health") as app:
        yield app


def warm_up(url: str, workers: int, *, timeout: float = 15.0) -> None:
    """Bursts of ``/health`` requests until ``workers`` distinct worker pids answered.

    span-profiles' WSGI adapters instrument on a worker's first request, and requests arriving
    while that first one is still instrumenting are not labelled (a race reported with issue 4).
    A burst is over only when all its requests answered, the instrumenting one included, so
    every worker that got one is instrumented before the measured burst starts. Fresh
    connections, since gunicorn keeps a kept-alive connection on one worker.
    """
    import httpx

    def pid(_: int) -> int:
        with httpx.Client(timeout=5) as client:
            return int(client.get(url + "/health").json()["pid"])

    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < workers:
            assert time.monotonic() < deadline, f"only workers {seen} answered"
            seen.update(pool.map(pid, range(8)))


@dataclass(frozen=True)
class Served:
    """One answered request and the span id its response reported in ``x-span-id``."""

    path: str
    span_id: str


def get_concurrently(url: str, paths: Sequence[str], *, timeout: float = 30.0) -> list[Served]:
    """GET every path at once, one thread each; every response must be 200 with ``x-span-id``."""
    import httpx

    with httpx.Client(base_url=url, timeout=timeout) as client:

        def get(path: str) -> Served:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
            return Served(path.partition("?")[0], response.headers["x-span-id"])

        with ThreadPoolExecutor(len(paths)) as pool:
            served = list(pool.map(get, paths))
    assert len({s.span_id for s in served}) == len(served), "span ids must be unique"
    return served


def interleaved(counts: Mapping[str, int]) -> list[str]:
    """``{"/a": 2, "/b": 2}`` -> ``["/a", "/b", "/a", "/b"]``: both endpoints run side by side."""
    rounds = max(counts.values())
    return [path for i in range(rounds) for path, n in counts.items() if i < n]


def assert_own_profiles(
    db_path: Path,
    served: Sequence[Served],
    own: Mapping[str, str],
    *,
    service: str,
    children: Mapping[str, str] | None = None,
    min_samples: int = 1,
) -> dict[str, list[int]]:
    """Each request's span profile holds its endpoint's function, and almost no other endpoint's.

    "Almost": even with the agent pinned next to the event loop, the kernel can preempt the
    sampler between its stack read and its label read, which mislabels a sample (measured at
    0.2-1 % of handler samples by ``benchmarks/fidelity.py``). So the foreign samples over the
    whole run may be at most 1 % of all (and at least 1 is tolerated); a missing or per-thread
    labelling bug gives tens of percent.

    ``own`` maps each path to the function its handler burns in; ``children`` maps a path to the
    function its child tasks or thread-pool jobs burn in, which must show up (summed over the
    endpoint's requests, since one child gets few samples) and never under another endpoint.
    Every sample of a span must carry that one span id (no multi-span labels). Returns the own
    function's sample count per request, by path, for messages.
    """
    children = dict(children or {})
    marker_functions = set(own.values()) | set(children.values())
    counts: dict[str, list[int]] = {path: [] for path in own}
    child_totals: Counter[str] = Counter()
    foreign_total = 0
    marker_total = 0
    foreign_seen: list[str] = []
    with ProfileReader(db_path) as store:
        assert store.services() == [service], f"service names: {store.services()}"
        for request in served:
            found: Counter[str] = Counter()
            for sample in store.samples(Selection(span_ids=(request.span_id,))):
                assert sample.label_values("span_id") == (request.span_id,), sample.labels
                for name in marker_functions:
                    if any(f == name or f.startswith(name + ".") for f in sample.functions):
                        found[name] += sample.count
            mine = {own[request.path], children.get(request.path)}
            foreign = {name: n for name, n in found.items() if name not in mine}
            marker_total += sum(found.values())
            if foreign:
                foreign_total += sum(foreign.values())
                foreign_seen.append(f"{request.path} span {request.span_id}: {foreign}")
            assert found[own[request.path]] >= min_samples, (
                f"{request.path} span {request.span_id} lacks {own[request.path]}: {dict(found)}"
            )
            counts[request.path].append(found[own[request.path]])
            if request.path in children:
                child_totals[request.path] += found[children[request.path]]
    assert foreign_total <= max(1, marker_total // 100), (
        f"spans hold other endpoints' work: {foreign_total} of {marker_total} samples: "
        f"{foreign_seen}"
    )
    for path, function in children.items():
        assert child_totals[path] > 0, f"no {function} samples under any {path} span"
    for path, per_request in counts.items():
        # ~150 ms of CPU per request is ~15 samples at 100 Hz; far fewer means lost windows.
        assert sum(per_request) >= 5 * len(per_request), (path, per_request)
    return counts
