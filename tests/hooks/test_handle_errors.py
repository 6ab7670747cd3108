"""The inlined Handle._run reports callback errors exactly like the stdlib."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from tests.support.labels import freed_by_refcount


def _run_with_failing_callback() -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def boom() -> None:
        raise ValueError("callback failed")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        loop.call_soon(boom)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    return seen


def test_callback_errors_reach_the_loop_exception_handler_unchanged(instrumented: Any) -> None:
    """A failing callback gives the same exception-handler context with and without the hook."""
    hooked = _run_with_failing_callback()
    import span_profiles

    span_profiles.uninstrument()
    plain = _run_with_failing_callback()
    assert len(hooked) == len(plain) == 1
    assert hooked[0]["message"] == plain[0]["message"]
    assert "boom" in hooked[0]["message"]
    assert isinstance(hooked[0]["exception"], ValueError)
    assert type(hooked[0]["handle"]) is type(plain[0]["handle"])


def test_keyboard_interrupt_in_a_callback_propagates(instrumented: Any) -> None:
    """SystemExit and KeyboardInterrupt still stop the loop, as in the stdlib."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        asyncio.get_running_loop().call_soon(interrupt)
        await asyncio.sleep(1)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("KeyboardInterrupt was swallowed")


class _KeepsItsError:
    """A callback that stores the exception it raises (as futures and retry helpers do)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def __call__(self) -> None:
        self.error = ValueError("kept")
        raise self.error


def _handle_freed_without_gc() -> bool:
    async def main(refs: list[weakref.ref[Any]]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _context: None)
        handle = loop.call_soon(_KeepsItsError())
        refs.append(weakref.ref(handle))
        del handle
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    return freed_by_refcount(main)


def test_a_failing_callback_leaves_no_cycle_through_the_handle(instrumented: Any) -> None:
    """The inlined body keeps the stdlib's ``self = None``: the handle dies by refcount alone.

    The callback keeps its exception, whose traceback holds the ``_run`` frame; were ``self``
    still bound there, handle -> callback -> exception -> frame -> handle would be a cycle that
    only the garbage collector frees.
    """
    assert hasattr(asyncio.events.Handle._run, "__wrapped__")
    assert _handle_freed_without_gc()
