"""Worker-thread jobs hold each label switch for the sampler gate, right before it happens."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import anyio.to_thread
import pytest

from span_profiles._core import sampler_gate
from tests.support.checkpoints import GateCalls


@pytest.mark.anyio
async def test_worker_thread_jobs_wait_before_each_label_switch(
    instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executor and ``to_thread`` jobs call the gate right before their labels go on and off."""
    gate = GateCalls(instrumented.sink)
    monkeypatch.setattr(sampler_gate, "wait", gate)
    tracer = instrumented.tracer

    def job() -> int:
        return threading.get_ident()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with tracer.start_as_current_span("executor"):
            executor_thread = pool.submit(job).result()
        with tracer.start_as_current_span("to_thread"):
            worker = await anyio.to_thread.run_sync(job)
    for thread_id in (executor_thread, worker):
        ops = [e.op for e in instrumented.sink.history if e.thread_id == thread_id]
        assert "add" in ops, ops
        assert "remove" in ops, ops
        assert gate.unguarded_switches(thread_id) == []
    assert threading.get_ident() not in gate.threads()  # the test's own (loop) thread never waits
