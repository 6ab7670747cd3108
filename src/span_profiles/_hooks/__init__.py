"""Runtime hooks, one module per runtime, each imported only when an installation needs it.

Every hook keeps the calling thread's labels equal to the labels of the OTel context that is about
to run there, and switches itself off (logged once) if it ever fails.

The contract (:class:`Hook`), the same for every module here, as trio's ``Instrument`` or anyio's
``AsyncBackend`` are for theirs: ``install(hot) -> undo``. ``hot`` is the installation's frozen
:class:`~span_profiles._core.engine.HotPath`; a hook records its attribute patches on
``hot.patches``, may add a callback to ``hot.root_started`` (run when a local root span starts:
for what can only be hooked from inside a running loop or trio run), and returns what undoes the
rest. Per-step code binds ``hot``'s fields as default arguments and never rebinds them; a sink
change reaches it through the contents of those fields.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from span_profiles._core.engine import HotPath

__all__ = ["Hook", "installed_module", "no_undo"]


class Hook(Protocol):
    """What every hook module provides (checked by mypy: the modules are its instances)."""

    def install(self, hot: HotPath, /) -> Callable[[], None]:
        """Install the hook for the installation ``hot``; return what undoes it."""
        ...


def no_undo() -> None:
    """The undo of a hook whose only changes are patches on ``hot.patches`` (or nothing)."""


def installed_module(name: str) -> ModuleType | None:
    """Module ``name`` if it is installed (imported now), else ``None``: a hook patches a
    runtime the app may use (uvloop) without making it a dependency."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
        return importlib.import_module(name)
    except ImportError:
        return None
