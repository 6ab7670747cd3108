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
    GET /api/export/{format}?span_id=ID | span_name=N   the file (a format of the registry,
                                       span_profiles.receiver.query.exports.FORMATS)

Every address takes ``service``, ``since`` and ``until`` (an age such as ``15m``, ``2h``, ``1d``,
an ISO 8601 time, or Unix seconds) and ``type`` (``cpu``, the default, or ``wall``: the profile
type shown; anything else answers 400). The overview and the endpoint page default to the last
hour. The span and endpoint pages show every type in tabs, ``type`` first.
Bad parameters answer 400 and unknown spans 404, as ``{"error": "..."}`` on ``/api`` and as a page
elsewhere. Everything here reads through the app's
:class:`~span_profiles.receiver.query.reader.ProfileReader` (``app.state.reader``) and nothing
writes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from span_profiles.receiver.model import CPU, check_span_id
from span_profiles.receiver.query import documents, exports
from span_profiles.receiver.query.documents import DiffRequest, NotFound, ViewError
from span_profiles.receiver.query.reader import ProfileReader
from span_profiles.receiver.query.selection import Selection, parse_profile_type, parse_time
from span_profiles.receiver.web import pages
from span_profiles.receiver.web.pages import FLAME_SCRIPTS, STATIC, environment

__all__ = ["ROUTES", "WINDOWS"]

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
_templates = Jinja2Templates(env=environment())


# -- parameters ----------------------------------------------------------------------------------


def _time(request: Request, key: str, default: str | None = None) -> float | None:
    text = request.query_params.get(key) or default
    if text is None or text == "all":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ViewError(f"{key}: {exc}") from None


def _profile_type(request: Request) -> str:
    try:
        return parse_profile_type(request.query_params.get("type") or CPU)
    except ValueError as exc:
        raise ViewError(f"type: {exc}") from None


def _window(request: Request, default_since: str | None = None) -> Selection:
    return Selection(
        service=request.query_params.get("service") or None,
        since=_time(request, "since", default_since),
        until=_time(request, "until"),
        profile_type=_profile_type(request),
    )


def _int(request: Request, key: str, default: int) -> int:
    text = request.query_params.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise ViewError(f"{key} must be a positive integer, not {text!r}")
    return int(text)


def _selection(request: Request) -> Selection:
    span_id = request.query_params.get("span_id")
    span_name = request.query_params.get("span_name")
    if (span_id is None) == (span_name is None):
        raise ViewError("give exactly one of span_id and span_name")
    documents.check_span_ids(span_id)
    return replace(
        _window(request),
        span_ids=(span_id,) if span_id is not None else (),
        span_names=(span_name,) if span_name is not None else (),
    )


def _diff_request(request: Request) -> DiffRequest:
    params = request.query_params
    window = _window(request)
    return DiffRequest(
        span_id=params.get("span_id"),
        span_name=params.get("span_name"),
        service=window.service,
        since=window.since,
        until=window.until,
        baseline_span_ids=tuple(params.getlist("baseline_span_id")),
        baseline_span_names=tuple(params.getlist("baseline_span_name")),
        baseline_since=_time(request, "baseline_since"),
        baseline_until=_time(request, "baseline_until"),
        min_samples=_int(request, "min_samples", DiffRequest.min_samples),
        profile_type=window.profile_type,
    )


def _reader(request: Request) -> ProfileReader:
    reader: ProfileReader = request.app.state.reader
    return reader


# -- plumbing ------------------------------------------------------------------------------------


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return _templates.TemplateResponse(
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


def _error_page(request: Request, exc: ViewError) -> Response:
    status = 404 if isinstance(exc, NotFound) else 400
    heading = "Not found" if status == 404 else "Cannot show this"
    context = {"status": status, "heading": heading, "message": str(exc)}
    return _page(request, "error.html", context, status_code=status)


def _html(build: Callable[[Request], tuple[str, dict[str, Any]]]) -> Handler:
    """An HTML endpoint: ``build`` (run on a worker thread) returns a template and its context."""

    async def endpoint(request: Request) -> Response:
        try:
            name, context = await run_in_threadpool(build, request)
        except ViewError as exc:
            return _error_page(request, exc)
        return _page(request, name, context)

    return endpoint


def _api(build: Callable[[Request], Any]) -> Handler:
    """A JSON endpoint: ``build`` (run on a worker thread) returns the document or a response."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await run_in_threadpool(build, request)
        except ViewError as exc:
            status = 404 if isinstance(exc, NotFound) else 400
            return JSONResponse({"error": str(exc)}, status_code=status)
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


# -- documents -----------------------------------------------------------------------------------


def _overview(request: Request) -> dict[str, Any]:
    return documents.overview_json(_reader(request), _window(request, _DEFAULT_SINCE))


def _span(request: Request) -> dict[str, Any]:
    return documents.span_json(_reader(request), request.path_params["span_id"], _window(request))


def _endpoint(request: Request) -> dict[str, Any]:
    name = request.query_params.get("span_name")
    if not name:
        raise ViewError("give span_name")
    return documents.endpoint_json(_reader(request), name, _window(request, _DEFAULT_SINCE))


def _diff(request: Request) -> dict[str, Any]:
    return documents.diff_json(_reader(request), _diff_request(request))


def _spans(request: Request) -> dict[str, Any]:
    name = request.query_params.get("span_name") or None
    selection = replace(_window(request), span_names=(name,) if name else ())
    return documents.spans_json(_reader(request), selection, limit=_int(request, "limit", 100))


def _span_names(request: Request) -> dict[str, Any]:
    return {"span_names": _overview(request)["endpoints"]}


def _flame(request: Request) -> dict[str, Any]:
    return documents.flame_json(_reader(request), _selection(request))


def _export(request: Request) -> Response:
    selection = _selection(request)
    title = (selection.span_ids or selection.span_names)[0]
    data, fmt = exports.export(
        _reader(request), selection, request.path_params["format"], title=title
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in title)
    if selection.profile_type != CPU:
        safe += f".{selection.profile_type}"
    return Response(
        data,
        media_type=fmt.media_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}{fmt.suffix}"'},
    )


# -- pages ---------------------------------------------------------------------------------------


def _overview_page(request: Request) -> tuple[str, dict[str, Any]]:
    since_text = request.query_params.get("since") or _DEFAULT_SINCE
    doc = _overview(request)
    kind = doc["window"]["profile_type"]
    api_query = request.url.query or f"since={since_text}"
    return "overview.html", {
        "doc": doc,
        "windows": WINDOWS,
        "since_text": since_text,
        # Columns for the other types the store holds, so that refreshes keep the same columns.
        "others": [other for other in doc["profile_types"] if other != kind],
        "services": _reader(request).services(kind),
        "api_url": f"/api/overview?{api_query}",
        "now_text": time.strftime("%H:%M:%S"),
        "scripts": ("ui.js",),
    }


def _span_page(request: Request) -> tuple[str, dict[str, Any]]:
    # Without an explicit type (a pasted id, a CPU link), open a tab that has samples.
    prefer = "type" not in request.query_params
    span_id = request.path_params["span_id"]
    context = pages.span_page(_reader(request), span_id, _window(request), prefer_samples=prefer)
    return "span.html", context


def _endpoint_page(request: Request) -> tuple[str, dict[str, Any]]:
    name = request.query_params.get("span_name")
    if not name:
        raise ViewError("give span_name")
    window = _window(request, _DEFAULT_SINCE)
    prefer = "type" not in request.query_params
    context = pages.endpoint_page(_reader(request), name, window, prefer_samples=prefer)
    return "endpoint.html", context


def _diff_page(request: Request) -> tuple[str, dict[str, Any]]:
    return "diff.html", {"doc": _diff(request)}


async def _lookup(request: Request) -> Response:
    # Pasted ids may carry spaces or upper case (some log formats); the page says if unknown.
    span_id = (request.query_params.get("span_id") or "").strip().lower()
    if check_span_id(span_id):
        return RedirectResponse(f"/spans/{span_id}", status_code=303)
    message = f"{span_id!r} is not a span id: paste the 16 hex characters from a trace or log"
    context = {"status": 400, "heading": "Not a span id", "message": message}
    return _page(request, "error.html", context, status_code=400)


ROUTES: tuple[BaseRoute, ...] = (
    Route("/", _html(_overview_page), name="overview"),
    Route("/spans/{span_id}", _html(_span_page), name="span"),
    Route("/endpoint", _html(_endpoint_page), name="endpoint"),
    Route("/diff", _html(_diff_page), name="diff"),
    Route("/lookup", _lookup, name="lookup"),
    Route("/api/overview", _api(_overview), name="api_overview"),
    Route("/api/span-names", _api(_span_names), name="api_span_names"),
    Route("/api/spans", _api(_spans), name="api_spans"),
    Route("/api/spans/{span_id}", _api(_span), name="api_span"),
    Route("/api/flame", _api(_flame), name="api_flame"),
    Route("/api/endpoint", _api(_endpoint), name="api_endpoint"),
    Route("/api/diff", _api(_diff), name="api_diff"),
    Route("/api/export/{format}", _api(_export), name="api_export"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
)
"""The UI's pages, its JSON API and ``/static``, as data (``create_app`` serves them)."""
