"""The adapters' lazy start: once per process, and no request runs before it finished."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import _instrument
from span_profiles._startup import LazyStart
from span_profiles.testing import RecordingSink


def test_concurrent_first_requests_all_wait_for_instrumentation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads racing on the first request all return only once instrument() has finished."""
    span_profiles.uninstrument()
    calls: list[int] = []
    real_instrument = _instrument.instrument

    def slow_instrument(**kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return real_instrument(**kwargs)

    monkeypatch.setattr(_instrument, "instrument", slow_instrument)
    settings = span_profiles.Settings.resolve({"profiler": "off"}, environ={})
    ensure = LazyStart(TracerProvider(), RecordingSink(), settings)
    seen: list[bool] = []

    def request() -> None:
        ensure()
        seen.append(span_profiles.is_instrumented())

    threads = [threading.Thread(target=request) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        span_profiles.uninstrument()
    assert seen == [True] * 8
    assert len(calls) == 1


@pytest.mark.anyio
async def test_lifespan_shutdown_flushes_the_agent_the_adapter_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ASGI adapter stops the agent it started before it answers the lifespan shutdown.

    uvicorn ends the process by re-raising the signal it handled, so atexit never runs: without
    this the last window is lost.
    """
    from span_profiles import _profiler
    from span_profiles.asgi import SpanProfilesMiddleware

    span_profiles.uninstrument()
    events: list[str] = []
    monkeypatch.setattr(
        _profiler, "start_profiler", lambda **kwargs: events.append("start") or True
    )
    monkeypatch.setattr(_profiler, "pin_current_thread", lambda: None)
    monkeypatch.setattr(_profiler, "stop_profiler", lambda: events.append("stop") or True)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    middleware = SpanProfilesMiddleware(
        app, tracer_provider=TracerProvider(), sink=RecordingSink(), profiler="on"
    )
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        events.append(message["type"])

    try:
        await middleware({"type": "lifespan"}, receive, send)
    finally:
        span_profiles.uninstrument()
    assert events == ["start", "lifespan.startup.complete", "stop", "lifespan.shutdown.complete"]


def test_stop_leaves_an_agent_it_did_not_start_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-up that found the agent already running (start_profiler False) never stops it."""
    from span_profiles import _profiler

    span_profiles.uninstrument()
    stopped: list[bool] = []
    monkeypatch.setattr(_profiler, "start_profiler", lambda **kwargs: False)
    monkeypatch.setattr(_profiler, "stop_profiler", lambda: stopped.append(True) or True)
    settings = span_profiles.Settings.resolve({"profiler": "on"}, environ={})
    ensure = LazyStart(TracerProvider(), RecordingSink(), settings)
    try:
        ensure()
        ensure.stop()
    finally:
        span_profiles.uninstrument()
    assert stopped == []
