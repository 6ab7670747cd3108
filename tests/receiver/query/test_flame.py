"""Flame trees and top functions from stored stacks (``span_profiles.receiver.query.flame``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, Selection
from span_profiles.receiver.query.flame import build_tree
from span_profiles.receiver.query.stacks import stack_counts, top_functions
from tests.support.known_shares import CPU_NS_PER_SAMPLE, A, B, C, D, fill, sample_count


@pytest.fixture
def store(db_path: Path) -> ProfileReader:
    """The shared known-shares store, open."""
    fill(db_path)
    return ProfileReader(db_path)


def test_tree_of_one_span(store: ProfileReader) -> None:
    """A span's tree holds its samples only, merged root first, with self and CPU per node."""
    tree = build_tree(stack_counts(store, Selection(span_ids=(A,))))
    assert tree.name == "all"
    assert tree.value == sample_count(A) == 10
    main = tree.children["main"]
    assert main.value == 10
    assert main.self_value == 0
    assert set(main.children) == {"handler", "slow_io"}
    assert main.children["handler"].children["burn_a"].value == 6
    assert main.children["handler"].children["burn_a"].self_value == 6
    assert main.children["slow_io"].self_value == 4
    assert tree.nanos == 10 * CPU_NS_PER_SAMPLE
    document = tree.to_json()
    assert [child["name"] for child in document["children"][0]["children"]] == [
        "handler",
        "slow_io",
    ]
    assert document["cpu_seconds"] == pytest.approx(0.1)


def test_tree_of_a_span_name_aggregates_its_spans(store: ProfileReader) -> None:
    """Selecting by span_name and service merges all that endpoint's spans."""
    tree = build_tree(stack_counts(store, Selection(service="shop", span_names=("GET /a",))))
    assert tree.value == sample_count(A) + sample_count(B) + sample_count(C)
    assert tree.children["main"].children["handler"].children["burn_a"].value == 6 + 18 + 27


def test_selection_union_and_exclusion(store: ProfileReader) -> None:
    """span_ids and span_names select a union once; exclude_span_ids removes a span."""
    union = stack_counts(store, Selection(span_ids=(D,), span_names=("GET /b",)))
    assert sum(stack.count for stack in union) == sample_count(D)
    others = stack_counts(
        store, Selection(service="shop", span_names=("GET /a",), exclude_span_ids=(A,))
    )
    assert sum(stack.count for stack in others) == sample_count(B) + sample_count(C)


def test_window_bounds_arrival_time(store: ProfileReader) -> None:
    """since/until keep only the profiles that arrived inside the window."""
    everything = stack_counts(store, Selection(span_ids=(B,)))
    recent = stack_counts(store, Selection(span_ids=(B,), since=max_arrival(store) - 1))
    assert sum(s.count for s in everything) == 20
    assert sum(s.count for s in recent) == 10


def max_arrival(store: ProfileReader) -> float:
    """The newest arrival time in the store."""
    return max(sample.received_at for sample in store.samples())


def test_function_stats_self_and_total(store: ProfileReader) -> None:
    """Top functions: self = leaf samples, total = samples with the function on the stack."""
    stats = {s.name: s for s in top_functions(stack_counts(store, Selection(span_ids=(A,))))}
    assert (stats["burn_a"].self_count, stats["burn_a"].total_count) == (6, 6)
    assert (stats["main"].self_count, stats["main"].total_count) == (0, 10)
    assert stats["handler"].to_json(10)["total_share"] == pytest.approx(0.6)
    assert next(iter(stats)) == "burn_a"


def test_unknown_span_gives_an_empty_tree(store: ProfileReader) -> None:
    """A span id that was never stored gives a root with no samples, not an error."""
    tree = build_tree(stack_counts(store, Selection(span_ids=("0123456789abcdef",))))
    assert (tree.value, tree.children) == (0, {})


def brute_force(store: ProfileReader, selection: Selection) -> dict[tuple[str, ...], int]:
    """Stack counts of ``selection`` computed sample by sample from ``store.samples()``."""
    counts: dict[tuple[str, ...], int] = {}
    for s in store.samples():
        ids = set(s.label_values("span_id"))
        names = set(s.label_values("span_name"))
        if selection.service is not None and s.service != selection.service:
            continue
        if (selection.span_ids or selection.span_names) and not (
            ids & set(selection.span_ids) or names & set(selection.span_names)
        ):
            continue
        if ids & set(selection.exclude_span_ids):
            continue
        counts[s.functions] = counts.get(s.functions, 0) + s.count
    return counts


@pytest.mark.parametrize(
    "selection",
    [
        Selection(),
        Selection(service="shop"),
        Selection(span_ids=(A, D)),
        Selection(span_names=("GET /a",)),
        Selection(span_names=("GET /a",), exclude_span_ids=(A, B)),
        Selection(service="shop", span_ids=(D,), span_names=("GET /a",), exclude_span_ids=(C,)),
        Selection(exclude_span_ids=(A,)),
    ],
    ids=repr,
)
def test_stack_counts_match_a_sample_by_sample_count(
    store: ProfileReader, selection: Selection
) -> None:
    """The aggregate-table queries select exactly what a filter over every sample selects."""
    got = {stack.functions: stack.count for stack in stack_counts(store, selection)}
    assert got == brute_force(store, selection)
    assert got
