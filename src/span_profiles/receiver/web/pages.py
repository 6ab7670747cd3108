"""The Jinja2 environment of the receiver's pages, and self-contained page files.

The web UI (:mod:`span_profiles.receiver.web.ui`) and ``span-profiles flame|diff -o FILE.html``
(:func:`span_html`, :func:`endpoint_html`, :func:`diff_html`) render the same templates, from the
same documents (:mod:`span_profiles.receiver.query.documents`). The span and endpoint pages show
one tab per profile type (:func:`type_pages`: CPU and wall, each with its total), the one asked for
first. A self-contained file
(``standalone=True``) inlines the vendored d3 and d3-flame-graph builds, the page script and the
style sheet, so it opens from ``file://`` with no network; it has no links back to a receiver.
Pages list the export formats the registry holds
(:data:`span_profiles.receiver.query.exports.FORMATS`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import markupsafe

from span_profiles.receiver.model import CPU, VIEW_TYPES, WALL, seconds_key
from span_profiles.receiver.query import documents
from span_profiles.receiver.query.documents import DiffRequest, NotFound
from span_profiles.receiver.query.exports import FORMATS
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source

__all__ = [
    "FLAME_SCRIPTS",
    "STATIC",
    "TEMPLATES",
    "TYPE_LABELS",
    "diff_html",
    "endpoint_html",
    "endpoint_page",
    "environment",
    "query_string",
    "render_file",
    "span_html",
    "span_page",
]

STATIC = Path(__file__).parent / "static"
"""Vendored front-end files and the page script (served at ``/static``)."""
TEMPLATES = Path(__file__).parent / "templates"
_CLOSING_TAG = re.compile(r"</(script|style)", re.IGNORECASE)

FLAME_SCRIPTS = ("d3/d3.min.js", "d3-flame-graph/d3-flamegraph.min.js", "flame-view.js")
"""Scripts of a page with a flame graph, in load order."""

TYPE_LABELS = {CPU: "CPU", WALL: "Wall"}
"""How headings and tabs name each profile type (another type: its own name)."""


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


def _type_label(kind: str) -> str:
    return TYPE_LABELS.get(kind, kind)


def _type_name(kind: str) -> str:
    # In a sentence: "CPU time", "wall time".
    return "CPU" if kind == CPU else kind


def _other_types(rows: Sequence[Mapping[str, Any]], kind: str) -> list[str]:
    """The view types other than ``kind`` whose seconds some row has (a table's extra columns)."""
    return [
        other
        for other in VIEW_TYPES
        if other != kind and any(row.get(seconds_key(other)) is not None for row in rows)
    ]


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
        "type_label": _type_label,
        "type_name": _type_name,
        "seconds_key": seconds_key,
        "other_types": _other_types,
    }
    env.globals.update(helpers)
    env.globals["view_types"] = VIEW_TYPES
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


def _tabs(
    docs: dict[str, dict[str, Any] | None], active: str, prefer_samples: bool
) -> dict[str, Any]:
    """The context of a page with one tab per type: the documents, the active type, and ``doc``
    (the active type's document, else the first type's that has samples). ``prefer_samples``:
    when ``active`` has no samples, the first type that has some is active instead."""
    shown = docs.get(active) or next((doc for doc in docs.values() if doc is not None), None)
    if prefer_samples and docs.get(active) is None and shown is not None:
        active = shown["selection"]["profile_type"]
    return {"docs": docs, "active": active, "doc": shown}


def span_page(
    source: Source,
    span_id: str,
    window: Selection = Selection(),
    *,
    prefer_samples: bool = False,
) -> dict[str, Any]:
    """The span page's context: :func:`~span_profiles.receiver.query.documents.span_json` per
    view type, ``window``'s type active (with ``prefer_samples``, a type the span has samples
    of); raises ``NotFound`` when no type has samples of it."""
    documents.check_span_ids(span_id)
    docs = documents.per_type(functools.partial(documents.span_json, source, span_id), window)
    context = _tabs(docs, window.profile_type, prefer_samples)
    if context["doc"] is None:
        raise NotFound(f"no samples for span_id {span_id}")
    return context


def endpoint_page(
    source: Source,
    span_name: str,
    window: Selection = Selection(),
    *,
    prefer_samples: bool = False,
) -> dict[str, Any]:
    """The endpoint page's context: :func:`~span_profiles.receiver.query.documents.endpoint_json`
    per view type (a type without samples is ``None``), ``window``'s type active (with
    ``prefer_samples``, a type the endpoint has samples of, if any)."""
    docs = documents.per_type(functools.partial(documents.endpoint_json, source, span_name), window)
    context = _tabs(docs, window.profile_type, prefer_samples)
    return context | {"span_name": span_name, "service": window.service}


def span_html(source: Source, span_id: str, window: Selection = Selection()) -> str:
    """One span's page as a self-contained file: a tab per profile type, ``window``'s type shown
    first (see :func:`span_page`); raises ``NotFound`` when that type has no samples of it."""
    context = span_page(source, span_id, window)
    if context["docs"][window.profile_type] is None:
        # Raises NotFound, naming the types the span has samples of.
        documents.span_json(source, span_id, window)
    return render_file("span.html", context.pop("doc"), **context)


def endpoint_html(source: Source, span_name: str, window: Selection = Selection()) -> str:
    """The aggregate flame graphs of one span name as a self-contained page (a tab per profile
    type); raises ``NotFound`` when ``window``'s type has no samples of it."""
    context = endpoint_page(source, span_name, window)
    if context["docs"][window.profile_type] is None:
        kind = "" if window.profile_type == CPU else f"{window.profile_type} "
        raise NotFound(f"no {kind}samples for span_name {span_name!r}")
    return render_file("endpoint.html", context.pop("doc"), **context)


def diff_html(source: Source, request: DiffRequest) -> str:
    """The diff flame graph of :func:`~span_profiles.receiver.query.documents.diff_json` as a
    self-contained page."""
    return render_file("diff.html", documents.diff_json(source, request))
