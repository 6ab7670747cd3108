"""Worker-thread jobs hold each label switch for the sampler gate, right before it happens."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import anyio.to_thread
import pytest

from span_profiles._core import sampler_gate


@pytest.mark.anyio
async def test_worker_thread_jobs_wait_before_each_label_switch(
    instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executor and ``to_thread`` jobs call the gate right before their labels go on and off."""
    sink = instrumented.sink
    seen: list[tuple[int, int]] = []

    def wait() -> None:
        seen.append((threading.get_ident(), len(sink.history)))

    monkeypatch.setattr(sampler_gate, "wait", wait)
    tracer = instrumented.tracer

    def job() -> int:
        return threading.get_ident()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with tracer.start_as_current_span("executor"):
            executor_thread = pool.submit(job).result()
        with tracer.start_as_current_span("to_thread"):
            worker = await anyio.to_thread.run_sync(job)
    switches: dict[int, list[tuple[int, str]]] = {}
    for index, event in enumerate(sink.history):
        if event.thread_id in (executor_thread, worker):
            switches.setdefault(event.thread_id, []).append((index, event.op))
    assert set(switches) == {executor_thread, worker}
    for thread_id, events in switches.items():
        waits = {at for tid, at in seen if tid == thread_id}
        # Labels go on (adds) and off (removes); each switch starts right after a wait.
        starts = [index for n, (index, op) in enumerate(events) if n == 0 or events[n - 1][1] != op]
        assert [op for _, op in events if _ in starts] == ["add", "remove"], events
        assert all(start in waits for start in starts), (thread_id, starts, waits)
