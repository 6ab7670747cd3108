"""The receiver's web UI and its JSON API, as Starlette routes served next to ingest.

Pages (HTML)::

    GET /                              overview: endpoints and the spans that used the most CPU
    GET /spans/{span_id}               one span: summary, flame graph, top functions, exports
    GET /endpoint?span_name=N[&service=S]   one span name: aggregate flame graph and its spans
    GET /lookup?span_id=ID             redirects to /spans/ID (the look-up box on every page)
    GET /diff?span_id=ID | span_name=N [&baseline_span_id=..]* [&baseline_span_name=..]*
             [&baseline_since=T&baseline_until=T] [&min_samples=N]     diff flame graph

JSON API (the documents of :mod:`span_profiles.receiver.query.documents`)::

    GET /api/overview                  overview_json
    GET /api/span-names                {"span_names": overview_json()["endpoints"]}
    GET /api/spans[?span_name=N&limit=K]   spans_json
    GET /api/spans/{span_id}           span_json (one span's flame tree)
    GET /api/flame?span_id=ID | span_name=N    flame_json
    GET /api/endpoint?span_name=N      endpoint_json
    GET /api/diff?...                  diff_json (same parameters as /diff)
    GET /api/export/{pprof|speedscope|folded}?span_id=ID | span_name=N   the file

Every address takes ``service``, ``since`` and ``until`` (an age such as ``15m``, ``2h``, ``1d``,
an ISO 8601 time, or Unix seconds). The overview and the endpoint page default to the last hour.
Bad parameters answer 400 and unknown spans 404, as ``{"error": "..."}`` on ``/api`` and as a page
elsewhere. Nothing here writes to the store.

Use :func:`routes` to add these to a Starlette app: ``span-profiles serve`` passes them to
:class:`~span_profiles.receiver.Receiver` as ``extra_routes``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from span_profiles.cli import _time_arg
from span_profiles.receiver.model import check_span_id
from span_profiles.receiver.query import documents as views
from span_profiles.receiver.query.exports import FORMATS
from span_profiles.receiver.query.stacks import Selection
from span_profiles.receiver.storage.writer import ProfileStore
from span_profiles.receiver.web import pages as _pages
from span_profiles.receiver.web.pages import FLAME_SCRIPTS, STATIC, environment

__all__ = ["FLAME_SCRIPTS", "WINDOWS", "routes"]

WINDOWS = (
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("6h", "last 6 hours"),
    ("1d", "last day"),
    ("7d", "last 7 days"),
    ("all", "everything stored"),
)
"""The overview's window choices: ``since`` value and label."""

_DEFAULT_SINCE = "1h"

Handler = Callable[[Request], Awaitable[Response]]


def _time(request: Request, key: str, default: str | None = None) -> float | None:
    text = request.query_params.get(key) or default
    if text is None or text == "all":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _time_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise views.ViewError(f"{key}: {exc}") from None


def _window(request: Request, default_since: str | None = None) -> dict[str, Any]:
    return {
        "service": request.query_params.get("service") or None,
        "since": _time(request, "since", default_since),
        "until": _time(request, "until"),
    }


def _int(request: Request, key: str, default: int) -> int:
    text = request.query_params.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise views.ViewError(f"{key} must be a positive integer, not {text!r}")
    return int(text)


def _selection(request: Request) -> Selection:
    span_id = request.query_params.get("span_id")
    span_name = request.query_params.get("span_name")
    if (span_id is None) == (span_name is None):
        raise views.ViewError("give exactly one of span_id and span_name")
    if span_id is not None and not check_span_id(span_id):
        raise views.ViewError(f"{span_id!r} is not a span id (16 lowercase hex characters)")
    return Selection(
        **_window(request),
        span_ids=(span_id,) if span_id is not None else (),
        span_names=(span_name,) if span_name is not None else (),
    )


def _diff_request(request: Request) -> views.DiffRequest:
    params = request.query_params
    return views.DiffRequest(
        span_id=params.get("span_id"),
        span_name=params.get("span_name"),
        **_window(request),
        baseline_span_ids=tuple(params.getlist("baseline_span_id")),
        baseline_span_names=tuple(params.getlist("baseline_span_name")),
        baseline_since=_time(request, "baseline_since"),
        baseline_until=_time(request, "baseline_until"),
        min_samples=_int(request, "min_samples", views.DiffRequest.min_samples),
    )


class _UI:
    """The route handlers, bound to one store."""

    def __init__(self, store: ProfileStore | None) -> None:
        self._store = store
        self.templates = Jinja2Templates(env=environment())

    def store(self, request: Request) -> ProfileStore:
        """The given store, else the app's (``create_app`` sets ``app.state.store``)."""
        if self._store is not None:
            return self._store
        store: ProfileStore = request.app.state.store
        return store

    # -- plumbing ----------------------------------------------------------------------------

    def _page(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "standalone": False,
                "scripts": FLAME_SCRIPTS,
                "static_url": lambda path: str(request.url_for("static", path=path)),
                **context,
            },
            status_code=status_code,
        )

    def page(self, build: Callable[[Request], tuple[str, dict[str, Any]]]) -> Handler:
        """An HTML endpoint: ``build`` (run on a worker thread) returns a template and context."""

        async def endpoint(request: Request) -> Response:
            try:
                name, context = await run_in_threadpool(build, request)
            except views.ViewError as exc:
                status = 404 if isinstance(exc, views.NotFound) else 400
                heading = "Not found" if status == 404 else "Cannot show this"
                context = {"status": status, "heading": heading, "message": str(exc)}
                return self._page(request, "error.html", context, status_code=status)
            return self._page(request, name, context)

        return endpoint

    @staticmethod
    def api(build: Callable[[Request], Any]) -> Handler:
        """A JSON endpoint: ``build`` (run on a worker thread) returns the document."""

        async def endpoint(request: Request) -> Response:
            try:
                result = await run_in_threadpool(build, request)
            except views.ViewError as exc:
                status = 404 if isinstance(exc, views.NotFound) else 400
                return JSONResponse({"error": str(exc)}, status_code=status)
            return result if isinstance(result, Response) else JSONResponse(result)

        return endpoint

    # -- views -------------------------------------------------------------------------------

    def overview(self, request: Request) -> dict[str, Any]:
        return views.overview_json(self.store(request), **_window(request, _DEFAULT_SINCE))

    def overview_page(self, request: Request) -> tuple[str, dict[str, Any]]:
        since_text = request.query_params.get("since") or _DEFAULT_SINCE
        doc = self.overview(request)
        api_query = request.url.query or f"since={since_text}"
        return "overview.html", {
            "doc": doc,
            "windows": WINDOWS,
            "since_text": since_text,
            "services": self.store(request).services(),
            "api_url": f"/api/overview?{api_query}",
            "now_text": time.strftime("%H:%M:%S"),
            "scripts": ("ui.js",),
        }

    def span(self, request: Request) -> dict[str, Any]:
        return views.span_json(
            self.store(request), request.path_params["span_id"], **_window(request)
        )

    def span_page(self, request: Request) -> tuple[str, dict[str, Any]]:
        return "span.html", {"doc": self.span(request)}

    def endpoint(self, request: Request) -> dict[str, Any]:
        name = request.query_params.get("span_name")
        if not name:
            raise views.ViewError("give span_name")
        window = _window(request, _DEFAULT_SINCE)
        return views.endpoint_json(self.store(request), window.pop("service"), name, **window)

    def endpoint_page(self, request: Request) -> tuple[str, dict[str, Any]]:
        doc = self.endpoint(request)
        selection = doc["selection"]
        return "endpoint.html", {
            "doc": doc,
            "span_name": selection["span_names"][0],
            "service": selection["service"],
            # The exports cover the window the page shows.
            "export_query": _pages.query_string(
                service=selection["service"],
                span_name=selection["span_names"][0],
                since=selection["since"],
                until=selection["until"],
            ),
        }

    def diff(self, request: Request) -> dict[str, Any]:
        return views.diff_json(self.store(request), _diff_request(request))

    def diff_page(self, request: Request) -> tuple[str, dict[str, Any]]:
        return "diff.html", {"doc": self.diff(request)}

    def spans(self, request: Request) -> dict[str, Any]:
        return views.spans_json(
            self.store(request),
            **_window(request),
            span_name=request.query_params.get("span_name") or None,
            limit=_int(request, "limit", 100),
        )

    def span_names(self, request: Request) -> dict[str, Any]:
        return {"span_names": self.overview(request)["endpoints"]}

    def flame(self, request: Request) -> dict[str, Any]:
        return views.flame_json(self.store(request), _selection(request))

    def export(self, request: Request) -> Response:
        fmt = request.path_params["format"]
        selection = _selection(request)
        label = (selection.span_ids or selection.span_names)[0]
        data, media_type = views.export(self.store(request), selection, fmt, name=label)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        filename = f"{safe}{FORMATS[fmt][1]}"
        return Response(
            data,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def routes(store: ProfileStore | None = None) -> list[BaseRoute]:
    """The UI's pages, its JSON API and ``/static``.

    Args:
        store: Where to read; by default the app's ``app.state.store``, which the receiver's
            ``create_app`` sets (``Receiver(..., extra_routes=ui.routes())``).
    """
    ui = _UI(store)

    async def lookup(request: Request) -> Response:
        # Pasted ids may carry spaces or upper case (some log formats); the page says if unknown.
        span_id = (request.query_params.get("span_id") or "").strip().lower()
        if check_span_id(span_id):
            return RedirectResponse(f"/spans/{span_id}", status_code=303)
        message = f"{span_id!r} is not a span id: paste the 16 hex characters from a trace or log"
        context = {"status": 400, "heading": "Not a span id", "message": message}
        return ui._page(request, "error.html", context, status_code=400)

    return [
        Route("/", ui.page(ui.overview_page), name="overview"),
        Route("/spans/{span_id}", ui.page(ui.span_page), name="span"),
        Route("/endpoint", ui.page(ui.endpoint_page), name="endpoint"),
        Route("/diff", ui.page(ui.diff_page), name="diff"),
        Route("/lookup", lookup, name="lookup"),
        Route("/api/overview", ui.api(ui.overview), name="api_overview"),
        Route("/api/span-names", ui.api(ui.span_names), name="api_span_names"),
        Route("/api/spans", ui.api(ui.spans), name="api_spans"),
        Route("/api/spans/{span_id}", ui.api(ui.span), name="api_span"),
        Route("/api/flame", ui.api(ui.flame), name="api_flame"),
        Route("/api/endpoint", ui.api(ui.endpoint), name="api_endpoint"),
        Route("/api/diff", ui.api(ui.diff), name="api_diff"),
        Route("/api/export/{format}", ui.api(ui.export), name="api_export"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
