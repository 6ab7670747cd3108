"""A Python no sampler runs on (free-threaded builds): labels work, one warning says why.

pyroscope-io has no build for free-threaded Pythons (nor for 3.15, where the built-in sampler
runs instead), and the built-in sampler does not support them. There, the adapters' lazy start
logs one warning without a traceback and everything else goes on: requests are still labelled.
These tests stand in such a Python (``_samplers.base.PYTHON``/``FREE_THREADED`` and a ``pyroscope``
that does not import).
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import _profiler, _samplers
from span_profiles._startup import LazyStart
from span_profiles.testing import RecordingSink
from tests.support.servers import run_agent_script


@pytest.mark.parametrize(
    ("python", "free_threaded", "said"),
    [
        ((3, 14), True, "pyroscope-io has no build for free-threaded Python 3.14t"),
        ((3, 15), True, "pyroscope-io has no build for free-threaded Python 3.15t"),
    ],
)
def test_one_warning_without_a_traceback_however_often_it_starts(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    python: tuple[int, int],
    free_threaded: bool,
    said: str,
) -> None:
    """Two adapters' lazy starts and an explicit profiler='on' start: one warning in all."""
    monkeypatch.setitem(sys.modules, "pyroscope", None)
    monkeypatch.setattr(_samplers.base, "PYTHON", python)
    monkeypatch.setattr(_samplers.base, "FREE_THREADED", free_threaded)
    caplog.set_level(logging.DEBUG, logger="span_profiles")
    span_profiles.uninstrument()
    settings = span_profiles.Settings.resolve({}, environ={})  # profiler="auto"
    try:
        for _ in range(2):
            LazyStart(TracerProvider(), RecordingSink(), settings)()
        assert not _profiler.start_profiler(settings=settings, profiler="on")
        assert not _profiler.profiler_running()
    finally:
        span_profiles.uninstrument()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    assert records[0].exc_info is None
    message = records[0].getMessage()
    assert message.startswith("span-profiles: no sampler available for this Python: ")
    assert said in message
    assert "the built-in sampler does not support free-threaded builds" in message
    assert "span labels, the middleware and the receiver work here" in message


def test_where_the_agent_only_is_missing_auto_stays_quiet(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a Python pyroscope-io has a build for, a missing agent is the user's choice with
    profiler='auto': no warning (profiler='on' logs an error: test_profiler_start.py)."""
    monkeypatch.setitem(sys.modules, "pyroscope", None)
    monkeypatch.setattr(_samplers.base, "PYTHON", (3, 12))
    monkeypatch.setattr(_samplers.base, "FREE_THREADED", False)
    caplog.set_level(logging.DEBUG, logger="span_profiles")
    assert not _profiler.start_profiler(tracer_provider=TracerProvider())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


SERVED = textwrap.dedent(
    """
    import asyncio, logging, sys

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="%(levelname)s %(message)s")
    from span_profiles import _samplers

    # Stand in a free-threaded build: neither pyroscope-io nor the built-in sampler runs there.
    sys.modules["pyroscope"] = None
    _samplers.base.FREE_THREADED = True

    import httpx
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from span_profiles.asgi import SpanProfilesMiddleware
    from span_profiles.testing import RecordingSink, labels_of

    sink = RecordingSink()
    right = []

    async def app(scope, receive, send):
        await asyncio.sleep(0)
        right.append(sink.current() == labels_of(trace.get_current_span()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        wrapped = SpanProfilesMiddleware(app, tracer_provider=TracerProvider(), sink=sink)
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(3):
                assert (await client.get("/items")).status_code == 200

    asyncio.run(main())
    print("labelled", sum(right), "of", len(right))
    """
)


@pytest.mark.e2e
def test_an_app_serves_and_labels_with_one_warning_and_no_traceback() -> None:
    """A fresh interpreter serving requests through the ASGI middleware: labelled requests,
    exactly one warning line on stderr, and no traceback anywhere."""
    done = run_agent_script(SERVED, SPAN_PROFILES_SAMPLER="auto")
    assert done.stdout.strip() == "labelled 3 of 3", done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "no sampler available for this Python" in warnings[0]
    assert "Traceback" not in done.stderr
    assert "ERROR" not in done.stderr
