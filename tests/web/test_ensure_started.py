"""The adapters' lazy start: once per process, and no request runs before it finished."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import _web
from span_profiles.testing import RecordingSink


def test_concurrent_first_requests_all_wait_for_instrumentation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads racing on the first request all return only once instrument() has finished."""
    span_profiles.uninstrument()
    calls: list[int] = []
    real_instrument = _web.instrument  # type: ignore[attr-defined]

    def slow_instrument(**kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return real_instrument(**kwargs)

    monkeypatch.setattr(_web, "instrument", slow_instrument)
    settings = span_profiles.Settings.resolve({"profiler": "off"}, environ={})
    ensure = _web.ensure_instrumented(TracerProvider(), RecordingSink(), settings)
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
