"""A sink set after install is the one every hook calls: cells keep their identity, not content."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest

from span_profiles import Labels
from span_profiles._core import engine
from span_profiles.testing import RecordingSink
from tests.support.labels import Checker, labels_of

pytestmark = pytest.mark.anyio


async def test_a_sink_set_after_install_is_the_one_the_hooks_call(
    instrumented: Any, backend_id: str
) -> None:
    """Task steps, context changes and worker-thread jobs all reach the new sink, none the old."""
    hot = engine.installed
    assert hot is not None
    old = instrumented.sink
    cells = (hot.apply, hot.applied)
    new = RecordingSink()
    engine.set_sink(new)
    assert (hot.apply, hot.applied) == cells
    assert hot.apply[0] == new.apply
    old.reset()
    check = Checker(new)
    tracer = instrumented.tracer
    kinds: set[str] = set()

    async def unit(i: int) -> None:
        with tracer.start_as_current_span(f"after-{i}") as span:  # the otel attach hook
            own = labels_of(span)
            check(own, f"{i} start")
            for k in range(3):
                await anyio.sleep(0)  # the asyncio step hook, StepCoroutine or trio's instrument
                check(own, f"{i} step {k}")
            await anyio.to_thread.run_sync(check, own, f"{i} anyio thread")
            if backend_id != "trio":
                import asyncio

                loop = asyncio.get_running_loop()
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    await loop.run_in_executor(pool, check, own, f"{i} executor")
                kinds.add("executor")
            kinds.add("steps")
        check({}, f"{i} after end")  # the detach hook

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(unit, i)
    assert check.failures == []
    assert old.history == []
    assert new.history
    if backend_id.startswith("uvloop"):
        import asyncio

        from span_profiles._hooks.asyncio import StepCoroutine

        task = asyncio.current_task()
        assert task is not None
        assert isinstance(task.get_coro(), StepCoroutine)  # the steps went through the wrapper
    assert kinds == ({"steps"} if backend_id == "trio" else {"steps", "executor"})


def test_the_apply_cell_and_table_belong_to_the_process(instrumented: Any) -> None:
    """Installations share the fixed cells; set_sink hands the table to the new sink."""
    hot = engine.installed
    assert hot is not None
    assert hot.apply is engine.apply_cell
    assert hot.applied == engine.shown.get
    with instrumented.tracer.start_as_current_span("shown"):
        assert instrumented.sink.applied() != ()
        new = RecordingSink()
        engine.set_sink(new)
        # The old sink released the calling thread and keeps its own view from now on.
        assert instrumented.sink.current() == {}
        assert new._applied is engine.shown
        assert instrumented.sink._applied is not engine.shown
        engine.refresh()
        assert new.current() != {}
    assert new.current() == {}


class _Exploding(RecordingSink):
    def apply(self, labels: Labels, /) -> None:
        raise RuntimeError("agent exploded")


def test_a_failing_sink_is_replaced_in_the_cell(
    instrumented: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Switching a failed sink off changes the cell's content: the hooks then call the new one."""
    hot = engine.installed
    assert hot is not None
    broken = _Exploding()
    engine.set_sink(broken)
    caplog.set_level(logging.ERROR, logger="span_profiles")
    with instrumented.tracer.start_as_current_span("boom"):
        pass
    assert hot.apply is engine.apply_cell
    assert engine.current_sink() is not broken
    assert hot.apply[0] == engine.current_sink().apply
    assert len([r for r in caplog.records if "label sink" in r.getMessage()]) == 1
