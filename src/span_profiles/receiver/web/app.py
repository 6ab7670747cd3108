"""The receiver's ASGI app, built in one place: ingest, the web UI, its JSON API and static files.

Ingest writes through the app's :class:`~span_profiles.receiver.storage.writer.ProfileStore`
(``app.state.store``); every page and API call reads through its own
:class:`~span_profiles.receiver.query.reader.ProfileReader` (``app.state.reader``), on read-only
connections, so a long query never holds up an upload.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from span_profiles.receiver.ingest.limits import Limits
from span_profiles.receiver.query.reader import ProfileReader
from span_profiles.receiver.storage.writer import ProfileStore
from span_profiles.receiver.web import ingest, ui

__all__ = ["create_app"]


def create_app(
    store: ProfileStore,
    *,
    reader: ProfileReader | None = None,
    limits: Limits | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The receiver as an ASGI app: it stores into ``store`` and shows what ``reader`` reads.

    Args:
        store: Where accepted profiles go; the app never closes it.
        reader: Where the UI and the JSON API read (default: a new reader of ``store.path``,
            which the app never closes either: ``app.state.reader``).
        limits: Size limits and timeouts (the defaults when ``None``).
        extra_routes: More routes, served after the receiver's own (and before the UI's
            catch-all pages).
    """
    app = Starlette(
        routes=[*ingest.ROUTES, *extra_routes, *ui.ROUTES],
        exception_handlers=dict(ingest.EXCEPTION_HANDLERS),
    )
    app.state.store = store
    app.state.reader = reader if reader is not None else ProfileReader(store.path)
    app.state.limits = limits if limits is not None else Limits()
    return app
