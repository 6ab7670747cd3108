"""Baseline diffs on profiles with known shares (``span_profiles.receiver.query.flame.diff``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, Selection
from span_profiles.receiver.query.flame import diff
from span_profiles.receiver.query.stacks import StackCount, stack_counts
from tests.support.known_shares import A, fill


def stacks(*pairs: tuple[str, int]) -> list[StackCount]:
    """Stacks ``"main;f"`` (root first, as written) with sample counts."""
    return [
        StackCount(
            tuple(reversed(text.split(";"))), ("",) * len(text.split(";")), n, n * 10_000_000
        )
        for text, n in pairs
    ]


def test_shares_make_one_request_comparable_with_many() -> None:
    """A 10-sample span vs a 1000-sample baseline: deltas are share differences."""
    span = stacks(("main;parse", 5), ("main;render", 5))
    baseline = stacks(("main;parse", 100), ("main;render", 800), ("main;io", 100))
    result = diff(span, baseline)
    assert [f.name for f in result.functions[:3]] == ["parse", "render", "io"]
    assert result.functions[0].self_delta == pytest.approx(0.5 - 0.1)
    assert result.functions[1].self_delta == pytest.approx(0.5 - 0.8)
    assert result.functions[2].total_delta == pytest.approx(-0.1)
    assert result.comparable


def test_new_function_on_top_with_positive_sign() -> None:
    """A function absent from the baseline is the top positive delta; a vanished one negative."""
    span = stacks(("main;handler;regex", 30), ("main;handler;db", 10))
    baseline = stacks(("main;handler;db", 50), ("main;handler;cache", 50))
    result = diff(span, baseline)
    by_name = {f.name: f for f in result.functions}
    assert [f.name for f in result.functions[:2]] == ["regex", "cache"]
    assert by_name["regex"].self_delta == pytest.approx(0.75)
    assert by_name["regex"].baseline_self_share == 0.0
    assert by_name["cache"].self_delta == pytest.approx(-0.5)
    # handler is on every stack on both sides: same total share, no delta.
    assert by_name["handler"].total_delta == pytest.approx(0.0)
    tree = result.tree.to_json()
    handler = tree["children"][0]["children"][0]
    assert handler["name"] == "handler"
    assert {c["name"]: round(c["delta"], 6) for c in handler["children"]} == {
        "regex": 0.75,
        "cache": -0.5,
        "db": round(0.25 - 0.5, 6),
    }
    regex = next(c for c in handler["children"] if c["name"] == "regex")
    assert regex["value"] == pytest.approx(0.375)
    assert (regex["span_samples"], regex["baseline_samples"]) == (30, 0)


def test_too_few_samples_says_so_with_counts() -> None:
    """Below min_samples on either side the diff is not comparable and the message has counts."""
    result = diff(stacks(("main;f", 3)), stacks(("main;f", 500)), min_samples=10)
    assert not result.comparable
    assert result.message is not None
    assert "span has 3 samples" in result.message
    assert "baseline" not in result.message.split(",")[0]
    empty = diff(stacks(("main;f", 50)), [], min_samples=10)
    assert empty.message is not None
    assert "baseline has 0 samples" in empty.message
    assert empty.to_json()["comparable"] is False


def test_default_baseline_from_the_store(db_path: Path) -> None:
    """Span A vs the other GET /a spans of its service: slow_io up, burn_a down."""
    fill(db_path)
    with ProfileReader(db_path) as store:
        span = stack_counts(store, Selection(span_ids=(A,)))
        baseline = stack_counts(
            store, Selection(service="shop", span_names=("GET /a",), exclude_span_ids=(A,))
        )
    result = diff(span, baseline)
    assert (result.span_samples, result.baseline_samples) == (10, 50)
    top = {f.name: f for f in result.functions[:3]}
    # slow_io +0.34 (self), handler -0.34 (total), burn_a -0.30 (self); main is 100 % on both.
    assert set(top) == {"slow_io", "handler", "burn_a"}
    assert top["slow_io"].self_delta == pytest.approx(0.4 - 3 / 50)
    assert top["handler"].total_delta == pytest.approx(0.6 - 47 / 50)
    assert top["burn_a"].self_delta == pytest.approx(0.6 - 45 / 50)
    assert result.functions[-1].name == "main"
