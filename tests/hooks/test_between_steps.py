"""Loop work between task steps shows no labels, on every backend.

After a step, the loop's own work (polling, timers, turning I/O events into callbacks, uvloop's
native callbacks, trio's scheduler) serves no request until a callback or step says whose it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from span_profiles._core import engine
from tests.support.labels import labels_of

pytestmark = pytest.mark.anyio


def _shown() -> dict[str, str]:
    return dict(engine.shown.get(threading.get_ident(), engine.EMPTY))


@pytest.fixture
def asyncio_only(backend_id: str) -> None:
    if backend_id == "trio":
        pytest.skip("asyncio loops")


async def test_loop_work_between_steps_shows_nothing(instrumented: Any, asyncio_only: None) -> None:
    """A callback with no span, run by the loop between a request's steps, shows no labels (on
    uvloop the loop runs it natively, right after the request's step)."""
    seen: list[dict[str, str]] = []
    loop = asyncio.get_running_loop()
    with instrumented.tracer.start_as_current_span("busy") as span:
        for _ in range(20):
            loop.call_soon(lambda: seen.append(_shown()), context=contextvars.Context())
            await asyncio.sleep(0)
            assert _shown() == labels_of(span)
    assert seen == [{}] * 20


async def test_the_stdlib_loop_polls_with_no_labels(instrumented: Any, backend_id: str) -> None:
    """Between iterations the stdlib loop selects and processes events unlabelled."""
    if backend_id not in ("asyncio", "asyncio-eager"):
        pytest.skip("the stdlib selector loop")
    loop: Any = asyncio.get_running_loop()
    selector = loop._selector
    polled: list[dict[str, str]] = []
    original = selector.select

    def select(timeout: Any = None) -> Any:
        polled.append(_shown())
        return original(timeout)

    selector.select = select
    try:
        with instrumented.tracer.start_as_current_span("busy"):
            for _ in range(20):
                await asyncio.sleep(0)
    finally:
        del selector.select
    assert len(polled) >= 20
    assert polled == [{}] * len(polled)


async def test_the_trio_scheduler_polls_with_no_labels(instrumented: Any, backend_id: str) -> None:
    """trio: the instrument clears the labels before the scheduler waits for I/O."""
    if backend_id != "trio":
        pytest.skip("trio's scheduler")
    import trio

    polled: list[dict[str, str]] = []

    class Spy(trio.abc.Instrument):
        def before_io_wait(self, timeout: float) -> None:
            polled.append(_shown())

    with instrumented.tracer.start_as_current_span("busy"):
        # Added after ours (the root span added ours to this run): called after it.
        trio.lowlevel.add_instrument(Spy())
        for _ in range(20):
            await trio.sleep(0)
    assert len(polled) >= 20
    assert polled == [{}] * len(polled)
