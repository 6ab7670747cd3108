"""Eager tasks: a new task's first step runs inside ``create_task``, in the middle of its creator's.

Three ways to start one: a loop with ``asyncio.eager_task_factory`` (3.12+; the ``*-eager``
backends), ``create_task(coro, eager_start=True)`` (3.14+), and either of those through a
``TaskGroup``. That first step runs outside ``Handle._run`` (and, without a factory, outside any
task factory). The oracle, as in ``test_oracle.py``: a checkpoint at every step of every unit, in
the child's eager step, and in the creator's remaining step right after ``create_task`` returned,
asserting the exact labels of the unit running there. Each checkpoint also records whether the
child did run eagerly, so that the test fails if a variant stops being eager rather than passing
without exercising anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from tests.support.backends import ASYNCIO_BACKENDS, EAGER
from tests.support.labels import Checker, freed_by_refcount, labels_of

pytestmark = pytest.mark.anyio

UNITS = 30

EAGER_START = sys.version_info >= (3, 14)
"""``create_task(..., eager_start=True)`` exists (stdlib loops and uvloop 0.23 pass it on)."""


Spawn = Callable[[Coroutine[Any, Any, None], "Creator"], "asyncio.Task[None]"]


class Creator:
    """What a spawn method may use: the creator's TaskGroup and another span's context."""

    def __init__(self, group: Any, other: contextvars.Context) -> None:
        self.group = group
        self.other = other


def _spawns(backend_id: str) -> dict[str, tuple[Spawn, bool, bool]]:
    """name -> (spawn, whether the child starts eagerly, whether it runs in ``other``)."""
    factory_eager = backend_id in EAGER
    spawns: dict[str, tuple[Spawn, bool, bool]] = {
        "loop.create_task": (
            lambda coro, c: asyncio.get_running_loop().create_task(coro),
            factory_eager,
            False,
        ),
        "asyncio.create_task": (lambda coro, c: asyncio.create_task(coro), factory_eager, False),
        "ensure_future": (lambda coro, c: asyncio.ensure_future(coro), factory_eager, False),
    }
    if sys.version_info >= (3, 11):
        spawns["TaskGroup.create_task"] = (
            lambda coro, c: c.group.create_task(coro),
            factory_eager,
            False,
        )
        spawns["create_task(context=)"] = (
            lambda coro, c: asyncio.get_running_loop().create_task(coro, context=c.other.copy()),
            factory_eager,
            True,
        )
    if EAGER_START:
        spawns["create_task(eager_start=True)"] = (
            lambda coro, c: asyncio.get_running_loop().create_task(coro, eager_start=True),  # type: ignore[call-arg]
            True,
            False,
        )
        spawns["TaskGroup.create_task(eager_start=True)"] = (
            lambda coro, c: c.group.create_task(coro, eager_start=True),
            True,
            False,
        )
        spawns["create_task(context=, eager_start=True)"] = (
            lambda coro, c: asyncio.get_running_loop().create_task(  # type: ignore[call-arg]
                coro, context=c.other.copy(), eager_start=True
            ),
            True,
            True,
        )
    return spawns


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)  # trio has no eager tasks
async def test_eager_children_and_their_creators_show_their_own_labels(
    instrumented: Any, backend_id: str
) -> None:
    """Every child, eager or not, and every creator, before and after each spawn, see only their
    own labels; a child that starts a local root in its eager step shows it there and leaves
    nothing of it on its creator; so does a child of that child."""
    check = Checker(instrumented.sink)
    tracer = instrumented.tracer
    spawns = _spawns(backend_id)
    eagerness: list[str] = []

    async def child(where: str, inherited: dict[str, str], own_root: bool, depth: int) -> None:
        started.add(where)
        check(inherited, f"{where}: first step, start")
        if not own_root:
            await asyncio.sleep(0)
            check(inherited, f"{where}: second step")
            return
        # A new trace: a local root of its own, started during the (eager) first step.
        with tracer.start_as_current_span(where, context=otel_context.Context()) as span:
            own = labels_of(span)
            check(own, f"{where}: own root, first step")
            if depth == 0:
                grandchild = asyncio.get_running_loop().create_task(
                    child(f"{where} / grandchild", own, own_root=True, depth=1)
                )
                check(own, f"{where}: right after creating its own child")
                await grandchild
                check(own, f"{where}: after awaiting its child")
            await asyncio.sleep(0)  # the eager step ends here, with this span current
            check(own, f"{where}: own root, next step")
        check(inherited, f"{where}: after its root ended")
        await asyncio.sleep(0)
        check(inherited, f"{where}: last step")

    started: set[str] = set()

    async def creator(i: int) -> None:
        other_span = tracer.start_span(f"other-{i}", context=otel_context.Context())
        other = contextvars.copy_context()
        other.run(otel_context.attach, trace.set_span_in_context(other_span))
        with tracer.start_as_current_span(f"creator-{i}") as span:
            own = labels_of(span)
            tasks = []
            group: Any = None
            if sys.version_info >= (3, 11):
                group = asyncio.TaskGroup()
                await group.__aenter__()
            for name, (spawn, eager, in_other) in spawns.items():
                for own_root in (False, True):
                    where = f"creator {i} {name} {'own root' if own_root else 'inherits'}"
                    inherited = labels_of(other_span) if in_other else own
                    coro = child(where, inherited, own_root, depth=0)
                    tasks.append(spawn(coro, Creator(group, other)))
                    check(own, f"creator {i}: right after {name} ({where})")
                    if (where in started) != eager:
                        eagerness.append(f"{where}: eager={where in started}, expected {eager}")
            check(own, f"creator {i}: every child created")
            await asyncio.gather(*tasks)
            if group is not None:
                await group.__aexit__(None, None, None)
            check(own, f"creator {i}: after its children")
        other_span.end()
        await asyncio.sleep(0)
        check({}, f"creator {i}: after its span")

    await asyncio.gather(*(creator(i) for i in range(UNITS)))
    assert check.failures == []
    assert eagerness == []
    # Per creator and spawn: a child that inherits (2 checkpoints), one with its own root (7) and
    # its grandchild (5), and the creator's own (1 per child); then 3 more per creator.
    per_unit = len(spawns) * (2 + 7 + 5 + 2) + 3
    assert check.count == UNITS * per_unit
    assert instrumented.sink.current() == {}


def _failing_eager_task_freed_without_gc(create: Callable[[Any], Any]) -> bool:
    """Whether an eager task whose first step raised dies by refcount alone (no GC cycle)."""

    async def fails() -> None:
        raise ValueError("first step")

    async def main(refs: list[weakref.ref[Any]]) -> None:
        task = create(fails())
        refs.append(weakref.ref(task))
        assert task.done()
        task.exception()
        del task
        await asyncio.sleep(0)

    return freed_by_refcount(main)


def _eager_factory(coro: Any) -> Any:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop.create_task(coro)


def _eager_start(coro: Any) -> Any:
    return asyncio.get_running_loop().create_task(coro, eager_start=True)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "create",
    [
        pytest.param(
            _eager_factory,
            id="eager_task_factory",
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+"),
        ),
        pytest.param(
            _eager_start,
            id="eager_start",
            marks=pytest.mark.skipif(not EAGER_START, reason="eager_start is 3.14+"),
        ),
    ],
)
def test_a_failed_eager_step_leaves_no_cycle_through_create_task(
    instrumented: Any, create: Callable[[Any], Any]
) -> None:
    """The ``create_task`` patch keeps the stdlib's gh-128552 fix: a task whose eager first step
    failed is not kept alive by a traceback holding the patch's frame (where the stdlib frees it
    by refcount alone, so must the patched loop)."""
    import span_profiles

    assert hasattr(asyncio.base_events.BaseEventLoop.create_task, "__wrapped__")
    hooked = _failing_eager_task_freed_without_gc(create)
    span_profiles.uninstrument()
    plain = _failing_eager_task_freed_without_gc(create)
    assert hooked or not plain
