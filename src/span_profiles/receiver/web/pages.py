"""The Jinja2 environment of the receiver's pages, and self-contained page files.

The web UI (:mod:`span_profiles.receiver.web.ui`) and ``span-profiles flame|diff -o FILE.html``
(:func:`span_html`, :func:`endpoint_html`, :func:`diff_html`) render the same templates, from the
same documents (:mod:`span_profiles.receiver.query.documents`). A self-contained file
(``standalone=True``) inlines the vendored d3 and d3-flame-graph builds, the page script and the
style sheet, so it opens from ``file://`` with no network; it has no links back to a receiver.
Pages list the export formats the registry holds
(:data:`span_profiles.receiver.query.exports.FORMATS`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import markupsafe

from span_profiles.receiver.query import documents
from span_profiles.receiver.query.documents import DiffRequest, NotFound
from span_profiles.receiver.query.exports import FORMATS
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source

__all__ = [
    "FLAME_SCRIPTS",
    "STATIC",
    "TEMPLATES",
    "diff_html",
    "endpoint_html",
    "environment",
    "query_string",
    "render_file",
    "span_html",
]

STATIC = Path(__file__).parent / "static"
"""Vendored front-end files and the page script (served at ``/static``)."""
TEMPLATES = Path(__file__).parent / "templates"
_CLOSING_TAG = re.compile(r"</(script|style)", re.IGNORECASE)

FLAME_SCRIPTS = ("d3/d3.min.js", "d3-flame-graph/d3-flamegraph.min.js", "flame-view.js")
"""Scripts of a page with a flame graph, in load order."""


@functools.cache
def asset(name: str) -> str:
    """The text of a file under :data:`STATIC`, for inlining.

    ``</script`` and ``</style`` are written ``<\\/script`` and ``<\\/style`` (the same inside a
    JavaScript string) so that no inlined file can close its element early.
    """
    path = (STATIC / name).resolve()
    if STATIC.resolve() not in path.parents:
        raise ValueError(f"{name!r} is not a static asset")
    return _CLOSING_TAG.sub(r"<\\/\1", path.read_text(encoding="utf-8"))


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds).astimezone().isoformat(sep=" ", timespec="seconds")


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _points(delta: float) -> str:
    # Share points, signed: "+12.5" means 12.5 percentage points more than the baseline.
    return f"{100 * delta:+.1f}"


def _sign_class(delta: float) -> str:
    return "pos" if delta > 1e-12 else "neg" if delta < -1e-12 else ""


def query_string(**params: object) -> str:
    """``key=value&...`` of the parameters that are neither ``None`` nor empty."""
    return urlencode({key: value for key, value in params.items() if value not in (None, "")})


@functools.cache
def environment() -> jinja2.Environment:
    """The templates with HTML autoescaping and the page helpers as globals."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    helpers: dict[str, Callable[..., Any]] = {
        "when": _when,
        "pct": _pct,
        "points": _points,
        "sign_class": _sign_class,
        "query": query_string,
        "asset": lambda name: markupsafe.Markup(asset(name)),
    }
    env.globals.update(helpers)
    # The registry itself, so the pages list what it holds when they render.
    env.globals["export_formats"] = FORMATS
    return env


def render_file(template: str, doc: dict[str, Any], **context: Any) -> str:
    """A self-contained HTML page: ``template`` rendered with ``doc`` and every asset inlined."""
    return (
        environment()
        .get_template(template)
        .render(doc=doc, standalone=True, scripts=FLAME_SCRIPTS, static_url=None, **context)
    )


def span_html(source: Source, span_id: str, window: Selection = Selection()) -> str:
    """One span's summary, flame graph and top functions as a self-contained page (see
    :func:`~span_profiles.receiver.query.documents.span_json`); raises ``NotFound``."""
    return render_file("span.html", documents.span_json(source, span_id, window))


def endpoint_html(source: Source, span_name: str, window: Selection = Selection()) -> str:
    """The aggregate flame graph of one span name as a self-contained page; raises
    ``NotFound`` when it has no samples."""
    doc = documents.endpoint_json(source, span_name, window)
    if not doc["total_samples"]:
        raise NotFound(f"no samples for span_name {span_name!r}")
    return render_file("endpoint.html", doc, span_name=span_name, service=window.service)


def diff_html(source: Source, request: DiffRequest) -> str:
    """The diff flame graph of :func:`~span_profiles.receiver.query.documents.diff_json` as a
    self-contained page."""
    return render_file("diff.html", documents.diff_json(source, request))
