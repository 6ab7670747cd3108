"""What every view shows, as JSON-ready data: the web UI's pages and API, and the CLI commands.

Each ``*_json`` function returns the document served at one ``/api/...`` address (see
:mod:`span_profiles.receiver.web.ui`) and rendered by the matching page; ``span-profiles diff --json``
prints :func:`diff_json`. The shapes are a stable API: keys are only ever added. Times are Unix
seconds (floats), CPU is in seconds, shares are fractions of the side's own total (0.25 = 25 %).

The ``*_html`` functions give the same views as self-contained pages (scripts and styles inlined,
no network). This module needs no web framework and no protobuf (except :func:`export` in pprof
format); the pages need Jinja2.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from span_profiles.receiver.model import check_span_id
from span_profiles.receiver.query import stacks as _query
from span_profiles.receiver.query.exports import FORMATS, to_folded, to_pprof, to_speedscope
from span_profiles.receiver.query.flame import (
    DEFAULT_MIN_SAMPLES,
    build_tree,
    diff,
    function_stats,
    stack_counts,
)
from span_profiles.receiver.query.stacks import Selection, SpanRow
from span_profiles.receiver.storage.writer import ProfileStore

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "DiffRequest",
    "NotFound",
    "ViewError",
    "diff_html",
    "diff_json",
    "diff_selections",
    "endpoint_html",
    "endpoint_json",
    "export",
    "flame_json",
    "newest_arrival",
    "overview_json",
    "span_html",
    "span_json",
    "spans_json",
    "stored_sample_rows",
]

DEFAULT_WINDOW_SECONDS = 3600.0
"""The overview's default window: the last hour."""

TOP_FUNCTIONS = 30
"""Rows in a page's top-functions table."""


class ViewError(ValueError):
    """A view cannot be built from these arguments; the message says why (HTTP 400, CLI exit 1)."""


class NotFound(ViewError):
    """The span or span name asked for has no samples in the window (HTTP 404)."""


@dataclass(frozen=True)
class DiffRequest:
    """What ``span-profiles diff`` and ``/api/diff`` compare.

    The span side is ``span_id`` or ``span_name`` in ``[since, until]`` (and ``service``). The
    baseline is ``baseline_span_ids`` / ``baseline_span_names`` when given, else the other spans of
    the span's name and service; it covers ``[baseline_since, baseline_until]`` when either is
    given, else the span side's window. The span's own samples are never part of the baseline.
    """

    span_id: str | None = None
    span_name: str | None = None
    service: str | None = None
    since: float | None = None
    until: float | None = None
    baseline_span_ids: tuple[str, ...] = ()
    baseline_span_names: tuple[str, ...] = ()
    baseline_since: float | None = None
    baseline_until: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES


def _check_span_ids(*span_ids: str | None) -> None:
    for span_id in span_ids:
        if span_id is not None and not check_span_id(span_id):
            raise ViewError(f"{span_id!r} is not a span id (16 lowercase hex characters)")


def diff_selections(store: ProfileStore, request: DiffRequest) -> tuple[Selection, Selection]:
    """The span side and the baseline side of ``request``; raises :class:`ViewError`."""
    if (request.span_id is None) == (request.span_name is None):
        raise ViewError("give exactly one of span_id and span_name")
    _check_span_ids(request.span_id, *request.baseline_span_ids)
    span = Selection(
        service=request.service,
        since=request.since,
        until=request.until,
        span_ids=(request.span_id,) if request.span_id is not None else (),
        span_names=(request.span_name,) if request.span_name is not None else (),
    )
    own_window = request.baseline_since is None and request.baseline_until is None
    baseline = Selection(
        service=request.service,
        since=request.since if own_window else request.baseline_since,
        until=request.until if own_window else request.baseline_until,
        exclude_span_ids=(request.span_id,) if request.span_id is not None else (),
    )
    if request.baseline_span_ids or request.baseline_span_names:
        return span, replace(
            baseline,
            span_ids=request.baseline_span_ids,
            span_names=request.baseline_span_names,
        )
    if request.span_id is None:
        if own_window:
            raise ViewError(
                "comparing a span name with itself needs an earlier window"
                " (baseline_since / baseline_until) or a baseline span name or span id"
            )
        return span, replace(baseline, span_names=span.span_names)
    summary = _query.span_summary(
        store, request.span_id, service=request.service, since=request.since, until=request.until
    )
    if summary is None:
        raise NotFound(f"no samples for span_id {request.span_id} in this window")
    if summary.span_name is None:
        raise ViewError(
            f"span {request.span_id} has no span_name label, so it has no default baseline:"
            " name one (baseline_span_name or baseline_span_id)"
        )
    # The default baseline: the other spans of the same name and service.
    return span, replace(
        baseline,
        service=request.service if request.service is not None else summary.service,
        span_names=(summary.span_name,),
    )


def _selection_json(selection: Selection) -> dict[str, Any]:
    return {
        "description": selection.describe(),
        "service": selection.service,
        "since": selection.since,
        "until": selection.until,
        "span_ids": list(selection.span_ids),
        "span_names": list(selection.span_names),
        "exclude_span_ids": list(selection.exclude_span_ids),
    }


def diff_json(
    store: ProfileStore, request: DiffRequest, *, limit: int = TOP_FUNCTIONS
) -> dict[str, Any]:
    """``{"span": {selection}, "baseline": {selection}, "span_samples", "baseline_samples",
    "min_samples", "comparable", "message", "functions": [...], "tree": {diff tree}}``.

    ``functions`` are :meth:`~span_profiles.receiver.query.flame.FunctionDelta.to_json` rows, the
    largest share change first; ``tree`` is a :meth:`~span_profiles.receiver.query.flame.DiffNode.to_json`.
    """
    span, baseline = diff_selections(store, request)
    result = diff(
        stack_counts(store, span), stack_counts(store, baseline), min_samples=request.min_samples
    )
    return {"span": _selection_json(span), "baseline": _selection_json(baseline)} | result.to_json(
        limit=limit
    )


def flame_json(
    store: ProfileStore, selection: Selection, *, limit: int = TOP_FUNCTIONS
) -> dict[str, Any]:
    """``{"selection", "total_samples", "cpu_seconds", "tree", "functions"}`` for any selection.

    ``tree`` is a :meth:`~span_profiles.receiver.query.flame.FlameNode.to_json`; ``functions`` are
    :meth:`~span_profiles.receiver.query.flame.FunctionStat.to_json` rows, most self samples first.
    """
    stacks = stack_counts(store, selection)
    tree = build_tree(stacks)
    return {
        "selection": _selection_json(selection),
        "total_samples": tree.value,
        "cpu_seconds": round(tree.cpu_ns / 1e9, 6),
        "tree": tree.to_json(),
        "functions": [stat.to_json(tree.value) for stat in function_stats(stacks)[:limit]],
    }


def _span_row_json(row: SpanRow) -> dict[str, Any]:
    return {
        "span_id": row.span_id,
        "span_name": row.span_name,
        "service": row.service,
        "samples": row.sample_count,
        "cpu_seconds": round(row.cpu_ns / 1e9, 6),
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
    }


def span_json(
    store: ProfileStore,
    span_id: str,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    """``{"span": {span_id, span_name, service, samples, cpu_seconds, first_seen, last_seen}}``
    plus every key of :func:`flame_json` for the span's samples; raises :class:`NotFound`."""
    _check_span_ids(span_id)
    summary = _query.span_summary(store, span_id, service=service, since=since, until=until)
    if summary is None:
        raise NotFound(f"no samples for span_id {span_id}")
    row = SpanRow(
        span_id=span_id,
        service=summary.service or "",
        span_name=summary.span_name,
        sample_count=summary.sample_count,
        cpu_ns=summary.cpu_ns,
        first_seen=summary.first_seen,
        last_seen=summary.last_seen,
    )
    selection = Selection(service=service, since=since, until=until, span_ids=(span_id,))
    return {"span": _span_row_json(row)} | flame_json(store, selection)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    # Nearest rank: the value below which `fraction` of the requests lie.
    if not sorted_values:
        return 0.0
    return sorted_values[max(math.ceil(fraction * len(sorted_values)) - 1, 0)]


def _endpoints(rows: list[SpanRow]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str | None], list[SpanRow]] = {}
    for row in rows:
        groups.setdefault((row.service, row.span_name), []).append(row)
    result: list[dict[str, Any]] = []
    for (service, name), spans in groups.items():
        cpu = sorted(row.cpu_ns / 1e9 for row in spans)
        result.append(
            {
                "service": service,
                "span_name": name,
                "requests": len(spans),
                "samples": sum(row.sample_count for row in spans),
                "cpu_seconds": round(sum(cpu), 6),
                "cpu_per_request": {
                    "median": round(statistics.median(cpu), 6),
                    "p95": round(_percentile(cpu, 0.95), 6),
                },
                "last_seen": max(row.last_seen for row in spans),
            }
        )
    result.sort(key=lambda e: (-e["cpu_seconds"], e["service"], e["span_name"] or ""))
    return result


def overview_json(
    store: ProfileStore,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
    top: int = 20,
) -> dict[str, Any]:
    """``{"window": {service, since, until}, "endpoints": [...], "top_spans": [...],
    "newest_arrival"}``.

    ``endpoints``: one row per service and span name (``null`` for spans without one) with
    ``requests`` (distinct span ids), ``samples``, ``cpu_seconds``, ``cpu_per_request``
    (``{"median", "p95"}`` in CPU seconds) and ``last_seen``, most CPU first. ``top_spans``: the
    ``top`` spans that used the most CPU, as :func:`spans_json` rows.
    """
    rows = _query.span_rows(store, Selection(service=service, since=since, until=until))
    ranked = sorted(rows, key=lambda row: (-row.cpu_ns, row.span_id))
    return {
        "window": {"service": service, "since": since, "until": until},
        "endpoints": _endpoints(rows),
        "top_spans": [_span_row_json(row) for row in ranked[:top]],
        "newest_arrival": newest_arrival(store),
    }


def spans_json(
    store: ProfileStore,
    *,
    service: str | None = None,
    span_name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """``{"spans": [{span_id, span_name, service, samples, cpu_seconds, first_seen, last_seen}]}``,
    newest first; ``span_name`` keeps that endpoint's spans."""
    selection = Selection(
        service=service, since=since, until=until, span_names=(span_name,) if span_name else ()
    )
    rows = _query.span_rows(store, selection)
    rows.sort(key=lambda row: (-row.last_seen, -row.cpu_ns, row.span_id))
    return {"spans": [_span_row_json(row) for row in rows[:limit]]}


def endpoint_json(
    store: ProfileStore,
    service: str | None,
    span_name: str,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The aggregate of one span name: every key of :func:`flame_json` plus ``"endpoint"``
    (its :func:`overview_json` row, ``null`` if unseen) and ``"spans"`` (its spans, most CPU first)."""
    selection = Selection(service=service, since=since, until=until, span_names=(span_name,))
    rows = [row for row in _query.span_rows(store, selection) if row.span_name == span_name]
    endpoints = _endpoints(rows)
    rows.sort(key=lambda row: (-row.cpu_ns, row.span_id))
    return flame_json(store, selection) | {
        "endpoint": endpoints[0] if len(endpoints) == 1 else None,
        "spans": [_span_row_json(row) for row in rows[:limit]],
    }


def export(store: ProfileStore, selection: Selection, fmt: str, *, name: str) -> tuple[bytes, str]:
    """The selection's samples as ``fmt`` (``pprof``, ``speedscope`` or ``folded``): bytes and
    media type. Raises :class:`ViewError` for another format, :class:`NotFound` without samples."""
    if fmt not in FORMATS:
        raise ViewError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    media_type = FORMATS[fmt][0]
    if not _query.has_samples(store, selection):
        raise NotFound(f"no samples for {selection.describe()}")
    if fmt == "pprof":
        return to_pprof(_query.iter_samples(store, selection)), media_type
    stacks = stack_counts(store, selection)
    if fmt == "folded":
        return to_folded(stacks).encode(), media_type
    document = to_speedscope(stacks, name, exporter=f"span-profiles {_version()}")
    return json.dumps(document).encode(), media_type


def _version() -> str:
    try:
        return importlib.metadata.version("span-profiles")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def newest_arrival(store: ProfileStore) -> float | None:
    """Arrival time of the newest stored profile, ``None`` for an empty store."""
    return _query.newest_arrival(store)


def stored_sample_rows(store: ProfileStore) -> int:
    """How many sample rows the store holds (each may count several samples)."""
    return _query.sample_rows(store)


def span_html(
    store: ProfileStore,
    span_id: str,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> str:
    """A self-contained HTML page (no network, works from ``file://``) with one span's summary,
    flame graph and top functions; raises :class:`NotFound`. ``span-profiles flame`` writes it."""
    from span_profiles.receiver.web import pages as _pages

    doc = span_json(store, span_id, service=service, since=since, until=until)
    return _pages.render_file("span.html", doc)


def endpoint_html(
    store: ProfileStore,
    service: str | None,
    span_name: str,
    *,
    since: float | None = None,
    until: float | None = None,
) -> str:
    """A self-contained HTML page with the aggregate flame graph of one span name (see
    :func:`span_html`); raises :class:`NotFound` when it has no samples."""
    from span_profiles.receiver.web import pages as _pages

    doc = endpoint_json(store, service, span_name, since=since, until=until)
    if not doc["total_samples"]:
        raise NotFound(f"no samples for span_name {span_name!r}")
    return _pages.render_file("endpoint.html", doc, span_name=span_name, service=service)


def diff_html(store: ProfileStore, request: DiffRequest) -> str:
    """A self-contained HTML diff flame graph (see :func:`span_html`) of :func:`diff_json`."""
    from span_profiles.receiver.web import pages as _pages

    return _pages.render_file("diff.html", diff_json(store, request))
