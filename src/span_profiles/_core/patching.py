"""Reversible attribute patches: ``uninstrument()`` restores exactly what was there before."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

_MISSING = object()


class Patches:
    """A stack of ``setattr`` patches that can be undone in reverse order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stack: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> Any:
        """Replace ``owner.name`` with ``value`` and return what ``owner.name`` was.

        Undo puts back what the owner's own ``__dict__`` held, so an inherited attribute is
        deleted again rather than copied down.
        """
        current = getattr(owner, name, None)
        namespace = vars(owner) if hasattr(owner, "__dict__") else {}
        original = namespace.get(name, _MISSING)
        with self._lock:
            self._stack.append((owner, name, original))
        setattr(owner, name, value)
        return current

    def undo(self, owner: Any | None = None) -> None:
        """Undo every patch (or only those on ``owner``), newest first."""
        with self._lock:
            keep: list[tuple[Any, str, Any]] = []
            todo: list[tuple[Any, str, Any]] = []
            for entry in self._stack:
                (todo if owner is None or entry[0] is owner else keep).append(entry)
            self._stack = keep
        for target, name, original in reversed(todo):
            if original is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(target, name)
            else:
                setattr(target, name, original)

    def __bool__(self) -> bool:
        return bool(self._stack)
