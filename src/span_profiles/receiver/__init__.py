"""The local Pyroscope-compatible receiver: ingest, storage, queries and the web UI.

The pipeline, one package per stage::

    ingest/   decode, validate, limits        bytes of an upload -> Series
    storage/  schema, migrations, writer,     Series -> SQLite rows and their rollups
              retention
    query/    selection, rollups read,        rows -> the documents every view renders
              documents, exports
    web/      routes, pages, static,          HTTP: the ingest endpoints, the UI, the JSON API
              templates, server

The read API (:class:`ProfileReader`, :class:`Selection` and the result types) and the writer
(:class:`ProfileStore`) need only the standard library. The HTTP receiver (:class:`Receiver`,
:func:`start_receiver_in_thread`, :func:`create_app`) needs protobuf, Starlette, uvicorn and
Jinja2 from the ``receiver`` extra, and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from span_profiles.receiver.ingest.limits import Limits as Limits
from span_profiles.receiver.query.reader import ProfileReader as ProfileReader
from span_profiles.receiver.query.samples import StoredSample as StoredSample
from span_profiles.receiver.query.selection import Selection as Selection
from span_profiles.receiver.query.spans import SpanStat as SpanStat
from span_profiles.receiver.query.stacks import FunctionStat as FunctionStat
from span_profiles.receiver.query.stacks import StackCount as StackCount
from span_profiles.receiver.storage.retention import Retention as Retention
from span_profiles.receiver.storage.retention import RetentionStatus as RetentionStatus
from span_profiles.receiver.storage.schema import default_db_path as default_db_path
from span_profiles.receiver.storage.writer import ProfileStore as ProfileStore

if TYPE_CHECKING:
    from span_profiles.receiver.web.app import create_app as create_app
    from span_profiles.receiver.web.server import Receiver as Receiver
    from span_profiles.receiver.web.server import (
        start_receiver_in_thread as start_receiver_in_thread,
    )

__all__ = [
    "FunctionStat",
    "Limits",
    "ProfileReader",
    "ProfileStore",
    "Receiver",
    "Retention",
    "RetentionStatus",
    "Selection",
    "SpanStat",
    "StackCount",
    "StoredSample",
    "create_app",
    "default_db_path",
    "start_receiver_in_thread",
]


def __getattr__(name: str) -> Any:
    # Lazy so that importing the read API never imports protobuf, Starlette or uvicorn.
    if name == "create_app":
        from span_profiles.receiver.web import app

        return app.create_app
    if name in ("Receiver", "start_receiver_in_thread"):
        from span_profiles.receiver.web import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
