"""The anyio backend matrix every async test runs over (``tests/conftest.py``'s ``anyio_backend``).

asyncio, asyncio with eager tasks (3.12+), uvloop, uvloop with eager tasks (where uvloop runs
them), trio. :data:`ASYNCIO_BACKENDS` is the part with asyncio's APIs (tasks, task factories,
``eager_start``), :data:`TRIO_BACKENDS` trio's, for tests of one runtime's own APIs (a test
overrides the fixture with ``@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import Any

import pytest

__all__ = [
    "ASYNCIO_BACKENDS",
    "BACKENDS",
    "EAGER",
    "TRIO_BACKENDS",
    "backend_name",
    "uvloop_runs_eager_factory",
]


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


def _uvloop_eager_loop() -> asyncio.AbstractEventLoop:
    loop = _uvloop_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def uvloop_runs_eager_factory() -> bool:
    """Whether uvloop runs a task's first step inside ``create_task`` with the eager factory.

    Probed, not assumed from versions: uvloop 0.23 does on Python 3.12; on 3.13 its
    ``create_task`` passes ``eager_start=None`` to the factory, which 3.13's eager factory
    rejects (TypeError), and on 3.14 that ``None`` overrides the factory's ``eager_start=True``.
    """
    if sys.version_info < (3, 12) or importlib.util.find_spec("uvloop") is None:
        return False
    started: list[bool] = []

    async def first_step() -> None:
        started.append(True)

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        step = first_step()
        try:
            task = loop.create_task(step)
        except TypeError:  # 3.13: the eager factory rejects uvloop's eager_start=None
            step.close()
            return False
        eager = bool(started)
        await task
        return eager

    loop = _uvloop_loop()  # the factory is set inside: on 3.13 it would fail to start main()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


_NAMES = {_eager_loop: "asyncio-eager", _uvloop_loop: "uvloop", _uvloop_eager_loop: "uvloop-eager"}

EAGER = frozenset({"asyncio-eager", "uvloop-eager"})
"""The backends whose loop has ``asyncio.eager_task_factory``: every new task starts eagerly."""

ASYNCIO_BACKENDS: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.version_info >= (3, 12):
    ASYNCIO_BACKENDS.append(
        pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio-eager")
    )
if importlib.util.find_spec("uvloop") is not None:
    ASYNCIO_BACKENDS.append(pytest.param(("asyncio", {"loop_factory": _uvloop_loop}), id="uvloop"))
    if uvloop_runs_eager_factory():
        ASYNCIO_BACKENDS.append(
            pytest.param(("asyncio", {"loop_factory": _uvloop_eager_loop}), id="uvloop-eager")
        )

TRIO_BACKENDS: list[Any] = []
if importlib.util.find_spec("trio") is not None:
    TRIO_BACKENDS.append(pytest.param(("trio", {}), id="trio"))

BACKENDS: list[Any] = ASYNCIO_BACKENDS + TRIO_BACKENDS


def backend_name(anyio_backend: Any) -> str:
    """The id of an ``anyio_backend`` value: asyncio, asyncio-eager, uvloop, uvloop-eager, trio."""
    name, options = anyio_backend
    return _NAMES.get(options.get("loop_factory"), str(name))
