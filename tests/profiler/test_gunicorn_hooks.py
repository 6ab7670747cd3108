"""gunicorn hooks start the profiler in the worker with the worker's number as CPU index."""

from __future__ import annotations

import types
from typing import Any

import pytest

from span_profiles import gunicorn


def test_post_worker_init_starts_the_profiler_with_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """post_worker_init passes the options and the worker's age to start_profiler."""
    calls: list[dict[str, Any]] = []

    def start(**kw: Any) -> bool:
        calls.append(kw)
        return True

    monkeypatch.setattr(gunicorn, "start_profiler", start)
    hook = gunicorn.make_post_worker_init(upload_interval=15)
    hook(types.SimpleNamespace(age=3))
    assert calls == [{"cpu_index": 3, "upload_interval": 15}]
