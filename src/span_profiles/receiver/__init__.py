"""Local Pyroscope-compatible receiver, its SQLite store and the ``span-profiles`` command.

The query API (:class:`ProfileStore`, :class:`Filter` and the result types) needs only the
standard library. The HTTP receiver (:class:`Receiver`, :func:`start_receiver_in_thread`,
:func:`create_app`) needs protobuf, Starlette and uvicorn, from the ``receiver`` extra, and is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from span_profiles.receiver.model import Limits as Limits
from span_profiles.receiver.storage.writer import Filter as Filter
from span_profiles.receiver.storage.writer import FunctionStat as FunctionStat
from span_profiles.receiver.storage.writer import ProfileStore as ProfileStore
from span_profiles.receiver.storage.writer import Retention as Retention
from span_profiles.receiver.storage.writer import RetentionStatus as RetentionStatus
from span_profiles.receiver.storage.writer import SpanStat as SpanStat
from span_profiles.receiver.storage.writer import StoredSample as StoredSample
from span_profiles.receiver.storage.writer import default_db_path as default_db_path

if TYPE_CHECKING:
    from span_profiles.receiver.web.server import Receiver as Receiver
    from span_profiles.receiver.web.server import create_app as create_app
    from span_profiles.receiver.web.server import (
        start_receiver_in_thread as start_receiver_in_thread,
    )

__all__ = [
    "Filter",
    "FunctionStat",
    "Limits",
    "ProfileStore",
    "Receiver",
    "Retention",
    "RetentionStatus",
    "SpanStat",
    "StoredSample",
    "create_app",
    "default_db_path",
    "start_receiver_in_thread",
]

_LAZY = frozenset({"Receiver", "create_app", "start_receiver_in_thread"})


def __getattr__(name: str) -> Any:
    # Lazy so that importing the query API never imports protobuf, Starlette or uvicorn.
    if name in _LAZY:
        from span_profiles.receiver.web import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
