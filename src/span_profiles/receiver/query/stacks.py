"""Stack counts and top functions of a selection: the one implementation every view uses.

One span name, or a whole window, comes from the name rollups (the hourly ones for whole hours);
span ids from their samples, except those already counted through the name; the samples of
excluded spans are subtracted. Several span names are read from their samples (a sample carrying
two of them counts once). Times are the profile type's nanoseconds (CPU time for ``cpu``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from span_profiles.receiver.model import CPU, seconds_key
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source, marks, selected_samples
from span_profiles.receiver.storage.schema import SAMPLE_NANOS

__all__ = ["FunctionStat", "StackCount", "stack_counts", "top_functions", "total_count"]

_STACK_BATCH = 500


@dataclass(frozen=True)
class StackCount:
    """The samples of one distinct stack within a selection."""

    functions: tuple[str, ...]
    """Function names, leaf first (as stored)."""
    files: tuple[str, ...]
    """File names parallel to :attr:`functions`."""
    count: int
    """Number of samples."""
    nanos: float
    """Their weight in nanoseconds (CPU time for ``cpu``)."""


@dataclass(frozen=True)
class FunctionStat:
    """Samples of one function name across a selection."""

    name: str
    self_count: int
    """Samples with this function as the leaf."""
    total_count: int
    """Samples with this function anywhere on the stack, counted once per sample."""
    nanos: float
    """Nanoseconds of the samples in :attr:`total_count`."""

    def to_json(self, total: int, profile_type: str = CPU) -> dict[str, Any]:
        """``{"name", "self", "total", "self_share", "total_share", "cpu_seconds"}``
        (``wall_seconds`` for ``profile_type="wall"``)."""
        return {
            "name": self.name,
            "self": self.self_count,
            "total": self.total_count,
            "self_share": self.self_count / total if total else 0.0,
            "total_share": self.total_count / total if total else 0.0,
            seconds_key(profile_type): round(self.nanos / 1e9, 6),
        }


def _stack_totals(source: Source, selection: Selection) -> dict[int, list[float]]:
    """Stack id -> ``[count, nanos]`` of the selection's samples (no stack text read)."""
    totals: dict[int, list[float]] = {}

    def add(sql: str, params: list[object], sign: int = 1) -> None:
        for stack_id, count, nanos in source.fetch(sql, params):
            entry = totals.setdefault(stack_id, [0, 0.0])
            entry[0] += sign * count
            entry[1] += sign * nanos

    names = selection.span_names
    if len(names) > 1:
        # A sample may carry two of the names: only its own rows count it once.
        add(*_sample_stacks(selection))
    elif names or not selection.span_ids:
        # Each sample once: the rows of the selected names, else the first = 1 row of each sample.
        which = f"span_name IN ({marks(names)})" if names else "first = 1"
        rollup = selection.rollup_sql("h")
        if rollup is not None:
            add(
                "SELECT stack_id, SUM(count), SUM(nanos) FROM name_stacks_hourly h"
                f" WHERE {which} AND {rollup[0]} GROUP BY stack_id",
                [*names, *rollup[1]],
            )
        edge = selection.edge_sql("p")
        if edge is not None:
            # From the profiles of the edges (the arrival index), then their rows of the names.
            add(
                "SELECT ns.stack_id, SUM(ns.count), SUM(ns.nanos)"
                " FROM profiles p CROSS JOIN name_stacks ns ON ns.profile_id = p.id"
                f" WHERE ns.{which} AND {edge[0]} GROUP BY ns.stack_id",
                [*names, *edge[1]],
            )
        if selection.exclude_span_ids:
            # The excluded spans' samples that the rows above counted.
            excluded = replace(
                selection, span_ids=selection.exclude_span_ids, span_names=(), exclude_span_ids=()
            )
            add(*_sample_stacks(excluded, require_names=names), sign=-1)
    if selection.span_ids and len(names) <= 1:
        add(*_sample_stacks(replace(selection, span_names=()), forbid_names=names))
    return {stack_id: entry for stack_id, entry in totals.items() if entry[0] > 0}


def _sample_stacks(
    selection: Selection,
    *,
    require_names: tuple[str, ...] = (),
    forbid_names: tuple[str, ...] = (),
) -> tuple[str, list[object]]:
    where, params = selected_samples(
        selection, require_names=require_names, forbid_names=forbid_names
    )
    return (
        f"SELECT s.stack_id, SUM(s.count), TOTAL({SAMPLE_NANOS}) FROM {where} GROUP BY s.stack_id",
        params,
    )


def stack_counts(source: Source, selection: Selection) -> list[StackCount]:
    """The selected samples grouped by stack, most samples first (ties by stack)."""
    totals = _stack_totals(source, selection)
    result = []
    ids = list(totals)
    for start in range(0, len(ids), _STACK_BATCH):
        chunk = ids[start : start + _STACK_BATCH]
        for stack_id, functions, files in source.fetch(
            f"SELECT id, functions, files FROM stacks WHERE id IN ({marks(chunk)})", chunk
        ):
            count, nanos = totals[stack_id]
            result.append(
                StackCount(
                    functions=tuple(json.loads(functions)),
                    files=tuple(json.loads(files)),
                    count=int(count),
                    nanos=float(nanos),
                )
            )
    result.sort(key=lambda stack: (-stack.count, stack.functions))
    return result


def total_count(source: Source, selection: Selection) -> int:
    """How many samples the selection holds (the sum of its stack counts)."""
    return int(sum(count for count, _ in _stack_totals(source, selection).values()))


def top_functions(stacks: Iterable[StackCount], *, limit: int | None = None) -> list[FunctionStat]:
    """Per function name: self and total samples, most self samples first (then total, name)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    nanos: dict[str, float] = {}
    for stack in stacks:
        if not stack.functions:
            continue
        self_counts[stack.functions[0]] += stack.count
        # A recursive function is on the stack once per sample, however deep.
        for name in set(stack.functions):
            total_counts[name] += stack.count
            nanos[name] = nanos.get(name, 0.0) + stack.nanos
    names = sorted(total_counts, key=lambda name: (-self_counts[name], -total_counts[name], name))
    if limit is not None:
        names = names[: max(limit, 0)]
    return [
        FunctionStat(name, self_counts[name], total_counts[name], nanos[name]) for name in names
    ]
