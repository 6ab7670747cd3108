"""Wall-clock profiles end to end: serve the known-waits app, drive it, judge what was stored.

Shared by ``tests/samplers/test_wall_e2e.py`` and ``benchmarks/wall.py``. The app is
``tests/support/apps/wall_app.py``: every request waits known times in functions of their own.
A wall sample belongs to the part named by the innermost known function on its stack; each
span's profile is judged against what that span did (its parts, each ``ms``), its duration (the
span's own, from the app) and what it did not do (another kind's parts, which no request of its
kind runs: time leaked from another request).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import ROOT, Server, agent_env, serving

KINDS: dict[str, tuple[str, ...]] = {
    "waits": ("part_sleep", "part_lock", "part_http", "child_part"),
    "sync": ("part_thread_sleep",),
}
"""Each endpoint and the parts its requests run (each for ``ms``)."""

KNOWN = frozenset(name for parts in KINDS.values() for name in parts)


_SLOW_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(int(parse_qs(urlsplit(self.path).query).get("ms", ["200"])[0]) / 1000)
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"slow")

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def slow_server() -> Iterator[str]:
    """A downstream HTTP server in a process of its own: ``GET /?ms=N`` answers after N ms."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(10)


@contextmanager
def wall_app(receiver_url: str, log: Path, *, loop: str = "auto", **extra: str) -> Iterator[Server]:
    """uvicorn serving the known-waits app with wall profiles on (``extra``: environment), and
    its slow downstream server."""
    with slow_server() as slow, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        port = sock.getsockname()[1]
        settings = {
            "SPAN_PROFILES_WALL": "true",
            "PYROSCOPE_UPLOAD_INTERVAL": "1",
            "SPAN_PROFILES_SHUTDOWN_TIMEOUT": "5",
            **extra,
        }
        env = agent_env(
            E2E_RECEIVER_URL=receiver_url,
            WALL_APP_SLOW_URL=slow,
            # This checkout's package, also where the environment installed another one.
            PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),
            **settings,
        )
        argv = [
            *(sys.executable, "-m", "uvicorn", "tests.support.apps.wall_app:app"),
            *("--fd", str(sock.fileno()), "--no-access-log", "--log-level", "warning"),
            *("--loop", loop, "--backlog", "2048"),
        ]
        with serving(
            argv, port=port, env=env, log=log, pass_fds=[sock.fileno()], ready_path="/ready"
        ) as server:
            sock.close()
            yield server


async def drive(
    url: str, *, rounds: int, per_kind: int, ms: int, kinds: tuple[str, ...] = tuple(KINDS)
) -> list[tuple[str, str]]:
    """``rounds`` of ``per_kind`` concurrent requests of each kind; ``(kind, span id)`` each."""
    import httpx

    done: list[tuple[str, str]] = []
    limits = httpx.Limits(max_connections=per_kind * len(kinds) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(kind: str) -> None:
            response = await client.get(f"/{kind}", params={"ms": ms})
            response.raise_for_status()
            done.append((kind, response.headers["x-span-id"]))

        for _ in range(rounds):
            await asyncio.gather(*(one(kind) for kind in kinds for _ in range(per_kind)))
    return done


def span_durations(url: str) -> dict[str, dict[str, Any]]:
    """Every local root span the app finished: span id -> ``{"duration": s, "parts": {name:
    s}}`` (each part's own duration, measured around it in the app)."""
    import httpx

    return dict(httpx.get(url + "/spans", timeout=30).json())


def part_of(functions: tuple[str, ...]) -> str:
    """The known part a stack (leaf first) is in, or ``other``."""
    for name in functions:
        short = name.rpartition(".")[2]
        if short in KNOWN:
            return short
    return "other"


@dataclass
class SpanWall:
    """What one span's wall profile holds."""

    kind: str
    duration: float
    truth: dict[str, float]
    """Each part's own duration, measured in the app."""
    total: float = 0.0
    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def coverage(self) -> float:
        """Wall seconds over the span's duration."""
        return self.total / self.duration if self.duration else 0.0

    def foreign(self) -> float:
        """Seconds of parts its kind never runs (another request's time)."""
        own = KINDS[self.kind]
        return sum(v for part, v in self.parts.items() if part != "other" and part not in own)


def judge(
    db_path: Path,
    service: str,
    requests: list[tuple[str, str]],
    durations: Mapping[str, Mapping[str, Any]],
) -> dict[str, SpanWall]:
    """Each driven request's wall profile, from the receiver's store."""
    from span_profiles.receiver import ProfileReader, Selection

    spans = {
        span_id: SpanWall(kind, durations[span_id]["duration"], durations[span_id]["parts"])
        for kind, span_id in requests
        if span_id in durations
    }
    reader = ProfileReader(db_path)
    try:
        for sample in reader.samples(Selection(service=service, profile_type="wall")):
            values = sample.label_values("span_id")
            if len(values) != 1 or values[0] not in spans:
                continue
            seconds = sample.nanos / 1e9
            span = spans[values[0]]
            span.total += seconds
            span.parts[part_of(sample.functions)] += seconds
    finally:
        reader.close()
    return spans


def summary(spans: Mapping[str, SpanWall]) -> dict[str, Any]:
    """The goals' numbers over every span: each part's wall seconds against its own measured
    duration (relative error), coverage, foreign time."""
    errors: dict[str, list[float]] = defaultdict(list)
    for span in spans.values():
        for part in KINDS[span.kind]:
            truth = span.truth.get(part, 0.0)
            if truth > 0:
                errors[part].append(span.parts.get(part, 0.0) / truth - 1)
    coverage = sorted(span.coverage for span in spans.values())
    return {
        "spans": len(spans),
        "part_error_range": {
            part: (round(min(v) * 100, 1), round(max(v) * 100, 1)) for part, v in errors.items()
        },
        "worst_part_error_pct": round(
            max((abs(x) for v in errors.values() for x in v), default=0) * 100, 1
        ),
        "coverage_min_pct": round(coverage[0] * 100, 1) if coverage else 0.0,
        "coverage_median_pct": round(coverage[len(coverage) // 2] * 100, 1) if coverage else 0.0,
        "coverage_max_pct": round(coverage[-1] * 100, 1) if coverage else 0.0,
        "foreign_s": round(sum(span.foreign() for span in spans.values()), 4),
    }


def wait_for_uploads(seconds: float = 2.5) -> None:
    """Let the last windows arrive (1 s windows, the built-in sampler settles for 1 s more)."""
    time.sleep(seconds)
