"""Wall-clock profiles end to end: the known-waits app under a real uvicorn, pushed to the receiver.

On each path that can run here: pyroscope-io with the in-process producer (CPython 3.10-3.14)
and the built-in sampler (3.14+), on uvloop and the stdlib loop. Every span's wall profile must
hold each of its known parts (a sleep, a lock held by another task, an HTTP call to a slow
server, a child task awaited by its parent, a sync endpoint sleeping in a worker thread) near its
own measured duration, add up to about the span's duration, and hold no part of another kind of
request. The bounds are wide enough for a loaded 2-CPU machine (the goals, ±10 % and ≥ 95 %,
are benchmarks/wall.py's); without wall profiles every part is zero and every test fails.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import sys
from pathlib import Path

import pytest

from span_profiles.receiver import Receiver
from tests.support import wall

pytestmark = [pytest.mark.e2e, pytest.mark.sampled, pytest.mark.timeout(180)]

PATHS = [
    pytest.param("pyroscope", "uvloop", marks=pytest.mark.agent, id="pyroscope-uvloop"),
    pytest.param("pyroscope", "asyncio", marks=pytest.mark.agent, id="pyroscope-asyncio"),
    pytest.param(
        "builtin",
        "uvloop",
        marks=pytest.mark.skipif(sys.version_info < (3, 14), reason="built-in sampler: 3.14+"),
        id="builtin-uvloop",
    ),
    pytest.param(
        "builtin",
        "asyncio",
        marks=pytest.mark.skipif(sys.version_info < (3, 14), reason="built-in sampler: 3.14+"),
        id="builtin-asyncio",
    ),
]


@pytest.mark.parametrize(("sampler", "loop"), PATHS)
def test_each_span_holds_its_own_waits(
    receiver: Receiver, tmp_path: Path, sampler: str, loop: str
) -> None:
    with wall.wall_app(
        receiver.url, tmp_path / "app.log", loop=loop, SPAN_PROFILES_SAMPLER=sampler
    ) as server:
        asyncio.run(wall.drive(server.url, rounds=1, per_kind=1, ms=10))  # warm up
        requests = asyncio.run(wall.drive(server.url, rounds=2, per_kind=3, ms=200))
        durations = wall.span_durations(server.url)
        server.stop(signal.SIGINT)
    wall.wait_for_uploads(0.5)
    spans = wall.judge(receiver.db_path, "wall-e2e", requests, durations)
    log = server.output()
    assert len(spans) == len(requests) == 12, log
    for span_id, span in spans.items():
        assert 0.75 <= span.coverage <= 1.25, (span_id, span, log)
        assert span.foreign() == 0, (span_id, span)
        for part, truth in span.truth.items():
            assert span.parts.get(part, 0.0) >= 0.5 * truth, (span_id, part, span)
    for part in wall.KNOWN:
        errors = [
            abs(span.parts.get(part, 0.0) / span.truth[part] - 1)
            for span in spans.values()
            if span.truth.get(part)
        ]
        assert statistics.median(errors) <= 0.15, (part, errors)


@pytest.mark.parametrize(("sampler", "loop"), PATHS[:1] + PATHS[2:3])
def test_wall_profiles_off_push_none(
    receiver: Receiver, tmp_path: Path, sampler: str, loop: str
) -> None:
    """The setting switches them: off, the same app pushes CPU profiles only."""
    with wall.wall_app(
        receiver.url,
        tmp_path / "app.log",
        loop=loop,
        SPAN_PROFILES_SAMPLER=sampler,
        SPAN_PROFILES_WALL="false",
    ) as server:
        requests = asyncio.run(wall.drive(server.url, rounds=1, per_kind=2, ms=100))
        durations = wall.span_durations(server.url)
        server.stop(signal.SIGINT)
    spans = wall.judge(receiver.db_path, "wall-e2e", requests, durations)
    assert spans
    assert all(span.total == 0 for span in spans.values())
