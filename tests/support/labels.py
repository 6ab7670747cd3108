"""Checkpoint helpers for the label oracle tests."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from tests.support.checkpoints import Checkpoints, labels_of

__all__ = ["Checker", "freed_by_refcount", "labels_of"]


class Checker(Checkpoints):
    """:class:`Checkpoints` called as ``check(expected, where)``; see ``failures`` and ``count``."""

    def __call__(self, expected: Mapping[str, str] | None, where: str) -> None:  # type: ignore[override]
        """Record the calling thread's labels at ``where`` and whether they are ``expected``."""
        super().__call__(where, expected)


def freed_by_refcount(main: Callable[[list[weakref.ref[Any]]], Coroutine[Any, Any, None]]) -> bool:
    """Run ``main(refs)`` with ``asyncio.run`` and the garbage collector off; whether everything
    it put a weak reference to in ``refs`` was freed, so by reference counting alone (no cycle)."""
    refs: list[weakref.ref[Any]] = []
    gc.collect()
    gc.disable()
    try:
        asyncio.run(main(refs))
        return bool(refs) and all(ref() is None for ref in refs)
    finally:
        gc.enable()
