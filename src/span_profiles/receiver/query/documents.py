"""What every view shows, as JSON-ready documents: the web UI's pages and API, and the CLI.

Each ``*_json`` function returns the document served at one ``/api/...`` address (see
:mod:`span_profiles.receiver.web.ui`) and rendered by the matching page; ``span-profiles diff
--json`` prints :func:`diff_json`. The shapes are a stable API: keys are only ever added. Times are
Unix seconds (floats), shares are fractions of the side's own total (0.25 = 25 %).

Every document shows one profile type, its selection's (``cpu`` unless asked otherwise), and
names its time after it: ``cpu_seconds`` and ``cpu_per_request`` in a CPU document,
``wall_seconds`` and ``wall_per_request`` in a wall document. The rows of spans and endpoints
also carry the other types' time for the same span or endpoint in the same window (``null`` where
that type has none), so a CPU overview shows each endpoint's wall seconds too; :func:`per_type`
builds one document per type for the pages that show them side by side.

Every document reads through one :class:`~span_profiles.receiver.query.reader.ProfileReader` and
its :class:`~span_profiles.receiver.query.selection.Selection`; none needs a web framework,
protobuf or a template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from span_profiles.receiver.model import CPU, VIEW_TYPES, check_span_id, seconds_key
from span_profiles.receiver.query import spans as _spans
from span_profiles.receiver.query import stacks as _stacks
from span_profiles.receiver.query.errors import NotFound, ViewError
from span_profiles.receiver.query.flame import DEFAULT_MIN_SAMPLES, build_tree, diff
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source, newest_arrival

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "TOP_FUNCTIONS",
    "DiffRequest",
    "NotFound",
    "ViewError",
    "check_span_ids",
    "diff_json",
    "diff_selections",
    "endpoint_json",
    "flame_json",
    "overview_json",
    "per_type",
    "span_json",
    "spans_json",
]

DEFAULT_WINDOW_SECONDS = 3600.0
"""The overview's default window: the last hour."""

TOP_FUNCTIONS = 30
"""Rows in a page's top-functions table."""

_ALL = Selection()


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
    profile_type: str = CPU


def check_span_ids(*span_ids: str | None) -> None:
    """Raise :class:`ViewError` for a span id that is not 16 lowercase hex characters."""
    for span_id in span_ids:
        if span_id is not None and not check_span_id(span_id):
            raise ViewError(f"{span_id!r} is not a span id (16 lowercase hex characters)")


def diff_selections(source: Source, request: DiffRequest) -> tuple[Selection, Selection]:
    """The span side and the baseline side of ``request``; raises :class:`ViewError`."""
    if (request.span_id is None) == (request.span_name is None):
        raise ViewError("give exactly one of span_id and span_name")
    check_span_ids(request.span_id, *request.baseline_span_ids)
    span = Selection(
        service=request.service,
        since=request.since,
        until=request.until,
        span_ids=(request.span_id,) if request.span_id is not None else (),
        span_names=(request.span_name,) if request.span_name is not None else (),
        profile_type=request.profile_type,
    )
    own_window = request.baseline_since is None and request.baseline_until is None
    baseline = replace(
        span,
        since=request.since if own_window else request.baseline_since,
        until=request.until if own_window else request.baseline_until,
        span_ids=(),
        span_names=(),
        exclude_span_ids=span.span_ids,
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
    summary = _spans.span_summary(source, span, request.span_id)
    if summary is None:
        raise NotFound(_missing(source, span, request.span_id, " in this window"))
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
        "profile_type": selection.profile_type,
    }


def diff_json(
    source: Source, request: DiffRequest, *, limit: int = TOP_FUNCTIONS
) -> dict[str, Any]:
    """``{"span": {selection}, "baseline": {selection}, "span_samples", "baseline_samples",
    "min_samples", "comparable", "message", "functions": [...], "tree": {diff tree}}``.

    ``functions`` are :meth:`~span_profiles.receiver.query.flame.FunctionDelta.to_json` rows, the
    largest share change first; ``tree`` is a
    :meth:`~span_profiles.receiver.query.flame.DiffNode.to_json`.
    """
    span, baseline = diff_selections(source, request)
    result = diff(
        _stacks.stack_counts(source, span),
        _stacks.stack_counts(source, baseline),
        min_samples=request.min_samples,
        profile_type=request.profile_type,
    )
    return {"span": _selection_json(span), "baseline": _selection_json(baseline)} | result.to_json(
        limit=limit
    )


def flame_json(
    source: Source, selection: Selection, *, limit: int = TOP_FUNCTIONS
) -> dict[str, Any]:
    """``{"selection", "total_samples", "cpu_seconds", "tree", "functions"}`` for any selection
    (``wall_seconds`` for a wall selection).

    ``tree`` is a :meth:`~span_profiles.receiver.query.flame.FlameNode.to_json`; ``functions`` are
    :meth:`~span_profiles.receiver.query.stacks.FunctionStat.to_json` rows, most self samples first.
    """
    kind = selection.profile_type
    stacks = _stacks.stack_counts(source, selection)
    tree = build_tree(stacks)
    return {
        "selection": _selection_json(selection),
        "total_samples": tree.value,
        seconds_key(kind): round(tree.nanos / 1e9, 6),
        "tree": tree.to_json(kind),
        "functions": [
            stat.to_json(tree.value, kind) for stat in _stacks.top_functions(stacks, limit=limit)
        ],
    }


# -- the other types' time in rows of one type ---------------------------------------------------


def _held(source: Source) -> dict[str, float]:
    """The view types the store holds, with the arrival time of their newest profile."""
    held = {}
    for kind in VIEW_TYPES:
        newest = newest_arrival(source, kind)
        if newest is not None:
            held[kind] = newest
    return held


def _seconds(nanos: float | None) -> float | None:
    return None if nanos is None else round(nanos / 1e9, 6)


def _span_rows(
    source: Source, selection: Selection, stats: Sequence[_spans.SpanStat], held: dict[str, float]
) -> list[dict[str, Any]]:
    """``stats`` (of the selection's type) as JSON rows, each with every other view type's
    seconds for the same span and service in the same window and span names (``null``: none)."""
    rows = [stat.to_json(selection.profile_type) for stat in stats]
    ids = tuple(dict.fromkeys(stat.span_id for stat in stats))
    for kind in VIEW_TYPES:
        if kind == selection.profile_type:
            continue
        found: dict[tuple[str, str], float] = {}
        if ids and kind in held:
            other = replace(selection, profile_type=kind, span_ids=ids, exclude_span_ids=())
            found = {(s.span_id, s.service): s.nanos for s in _spans.spans(source, other)}
        for stat, row in zip(stats, rows, strict=True):
            row[seconds_key(kind)] = _seconds(found.get((stat.span_id, stat.service)))
    return rows


def _endpoint_rows(
    source: Source,
    selection: Selection,
    stats: Sequence[_spans.EndpointStat],
    held: dict[str, float],
) -> list[dict[str, Any]]:
    """``stats`` as JSON rows, each with every other view type's seconds and time per request
    for the same service and span name in the same window (``null``: none)."""
    rows = [stat.to_json(selection.profile_type) for stat in stats]
    for kind in VIEW_TYPES:
        if kind == selection.profile_type:
            continue
        found: dict[tuple[str, str | None], _spans.EndpointStat] = {}
        if stats and kind in held:
            other = replace(selection, profile_type=kind)
            found = {(e.service, e.span_name): e for e in _spans.endpoint_stats(source, other)}
        for stat, row in zip(stats, rows, strict=True):
            match = found.get((stat.service, stat.span_name))
            row.update(
                match.times_json(kind)
                if match is not None
                else {seconds_key(kind): None, _spans.per_request_key(kind): None}
            )
    return rows


def _missing(source: Source, window: Selection, span_id: str, where: str = "") -> str:
    """Why a span has no document of the window's type, naming the types it has samples of."""
    kind = "" if window.profile_type == CPU else f"{window.profile_type} "
    others = [
        other
        for other in VIEW_TYPES
        if other != window.profile_type
        and _spans.span_summary(source, replace(window, profile_type=other), span_id) is not None
    ]
    has = f" (it has {' and '.join(others)} samples)" if others else ""
    return f"no {kind}samples for span_id {span_id}{where}{has}"


# -- the documents -------------------------------------------------------------------------------


def span_json(source: Source, span_id: str, window: Selection = _ALL) -> dict[str, Any]:
    """``{"span": {span_id, span_name, service, samples, cpu_seconds, first_seen, last_seen}}``
    plus every key of :func:`flame_json` for the span's samples in ``window`` (its service,
    times and profile type); the span also carries the other types' seconds (``wall_seconds``
    in a CPU document, ``null`` without wall samples). Raises :class:`NotFound`."""
    check_span_ids(span_id)
    summary = _spans.span_summary(source, window, span_id)
    if summary is None:
        raise NotFound(_missing(source, window, span_id))
    span = summary.to_json(window.profile_type)
    held = _held(source)
    for kind in VIEW_TYPES:
        if kind != window.profile_type:
            other = (
                _spans.span_summary(source, replace(window, profile_type=kind), span_id)
                if kind in held
                else None
            )
            span[seconds_key(kind)] = _seconds(other.nanos if other is not None else None)
    selection = replace(window, span_ids=(span_id,), span_names=(), exclude_span_ids=())
    return {"span": span} | flame_json(source, selection)


def _window_json(window: Selection) -> dict[str, Any]:
    return {
        "service": window.service,
        "since": window.since,
        "until": window.until,
        "profile_type": window.profile_type,
    }


def overview_json(source: Source, window: Selection = _ALL, *, top: int = 20) -> dict[str, Any]:
    """``{"window": {service, since, until, profile_type}, "endpoints": [...], "top_spans": [...],
    "newest_arrival", "profile_types"}``.

    ``endpoints``: one row per service and span name (``null`` for spans without one) with
    ``requests`` (distinct span ids), ``samples``, ``cpu_seconds``, ``cpu_per_request``
    (``{"median", "p95"}`` in CPU seconds) and ``last_seen``, most CPU first, and the same
    endpoint's ``wall_seconds`` and ``wall_per_request`` (``null`` without wall samples). In a
    wall overview the row's own keys are the wall ones and the CPU ones are added. ``top_spans``:
    the ``top`` spans with the most time of the window's type, as :func:`spans_json` rows.
    ``newest_arrival``: the newest profile of the window's type; ``profile_types``: each type the
    store holds, with its newest arrival. Only ``window``'s service, times and type are looked at.
    """
    window = replace(window, span_ids=(), span_names=(), exclude_span_ids=())
    held = _held(source)
    endpoints = _spans.endpoint_stats(source, window)
    spans = _spans.spans(source, window, limit=top, order="nanos")
    return {
        "window": _window_json(window),
        "endpoints": _endpoint_rows(source, window, endpoints, held),
        "top_spans": _span_rows(source, window, spans, held),
        "newest_arrival": held.get(window.profile_type),
        "profile_types": held,
    }


def spans_json(source: Source, window: Selection = _ALL, *, limit: int = 100) -> dict[str, Any]:
    """``{"spans": [{span_id, span_name, service, samples, cpu_seconds, first_seen, last_seen,
    wall_seconds}]}``, newest first; ``window.span_names`` keeps those endpoints' spans."""
    stats = _spans.spans(source, window, limit=limit, order="newest")
    return {"spans": _span_rows(source, window, stats, _held(source))}


def endpoint_json(
    source: Source, span_name: str, window: Selection = _ALL, *, limit: int = 100
) -> dict[str, Any]:
    """The aggregate of one span name: every key of :func:`flame_json` plus ``"endpoint"``
    (its :func:`overview_json` row, ``null`` if unseen or in several services) and ``"spans"``
    (its spans, most time first, counting their samples of this name)."""
    selection = replace(window, span_ids=(), span_names=(span_name,), exclude_span_ids=())
    held = _held(source)
    endpoints = _spans.endpoint_stats(source, selection)
    spans = _spans.spans(source, selection, limit=limit, order="nanos")
    return flame_json(source, selection) | {
        "endpoint": (
            _endpoint_rows(source, selection, endpoints, held)[0] if len(endpoints) == 1 else None
        ),
        "spans": _span_rows(source, selection, spans, held),
    }


def per_type(
    build: Callable[[Selection], dict[str, Any]], window: Selection
) -> dict[str, dict[str, Any] | None]:
    """``build(window)`` for each view type in turn (the window's type replaced): type ->
    document, ``None`` where that type has no samples (``build`` raised :class:`NotFound` or
    found none). The span and endpoint pages show one tab per entry."""
    docs: dict[str, dict[str, Any] | None] = {}
    for kind in VIEW_TYPES:
        try:
            doc = build(replace(window, profile_type=kind))
        except NotFound:
            doc = None
        docs[kind] = doc if doc is not None and doc.get("total_samples") != 0 else None
    return docs
