"""Flame trees, top functions and baseline diffs, built from stored stacks.

A flame tree merges stacks root first: a node is one function under one path of callers, its
``value`` the samples with that path on the stack, its ``self`` the samples where it is the leaf.
The root, ``all``, holds every sample. Nodes with the same function name under the same parent are
one node (names are what the agent sends; files are not part of the key, as in Pyroscope).

A diff compares a span (or a set of spans) with a baseline. Both sides are normalised to shares of
their own total, so one request compares fairly with a hundred: a function's *delta* is its share
in the span minus its share in the baseline, in share points (``0.25`` = 25 percentage points).

The JSON shapes built here (:meth:`FlameNode.to_json`, :meth:`DiffNode.to_json`,
:meth:`Diff.to_json`) are the documented API of the web UI and of ``span-profiles diff --json``;
change them only by adding keys. Times are named after the profile type: ``cpu_seconds`` for
``cpu``, ``wall_seconds`` for ``wall``.

Example::

    from span_profiles.receiver import ProfileReader, Selection
    from span_profiles.receiver.query.flame import build_tree

    with ProfileReader(path) as reader:
        tree = build_tree(reader.stack_counts(Selection(span_ids=("8d1510b9974d53af",))))
        print(tree.value, [child.name for child in tree.children.values()])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from span_profiles.receiver.model import CPU, seconds_key
from span_profiles.receiver.query.stacks import StackCount, top_functions

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "ROOT_NAME",
    "Diff",
    "DiffNode",
    "FlameNode",
    "FunctionDelta",
    "build_tree",
    "diff",
    "diff_tree",
]

ROOT_NAME = "all"
"""Name of the root node of every tree."""

DEFAULT_MIN_SAMPLES = 10
"""Fewest samples on each side for a diff to mean something: 100 ms of CPU at 100 Hz."""


@dataclass
class FlameNode:
    """One node of a flame tree (mutable while the tree is built)."""

    name: str
    value: int = 0
    """Samples with this node's path on the stack."""
    self_value: int = 0
    """Samples whose leaf is this node."""
    nanos: float = 0.0
    """Nanoseconds (CPU time for ``cpu``) of the samples counted in :attr:`value`."""
    children: dict[str, FlameNode] = field(default_factory=dict)
    """Child nodes by function name."""

    def to_json(self, profile_type: str = CPU) -> dict[str, Any]:
        """``{"name", "value", "self", "cpu_seconds", "children": [...]}``, children by value
        (``wall_seconds`` for ``profile_type="wall"``)."""
        key = seconds_key(profile_type)

        def node(tree: FlameNode) -> dict[str, Any]:
            return {
                "name": tree.name,
                "value": tree.value,
                "self": tree.self_value,
                key: round(tree.nanos / 1e9, 6),
                "children": [node(child) for child in _ranked(tree.children.values())],
            }

        return node(self)


def _ranked(nodes: Iterable[FlameNode]) -> list[FlameNode]:
    return sorted(nodes, key=lambda node: (-node.value, node.name))


def build_tree(stacks: Iterable[StackCount]) -> FlameNode:
    """Merge ``stacks`` (leaf first, as stored) into a flame tree rooted at :data:`ROOT_NAME`."""
    root = FlameNode(ROOT_NAME)
    for stack in stacks:
        node = root
        node.value += stack.count
        node.nanos += stack.nanos
        for name in reversed(stack.functions):
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = FlameNode(name)
            child.value += stack.count
            child.nanos += stack.nanos
            node = child
        node.self_value += stack.count
    return root


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


@dataclass
class DiffNode:
    """One node of a diff tree: a path of callers seen in the span, the baseline or both."""

    name: str
    span_count: int = 0
    baseline_count: int = 0
    span_share: float = 0.0
    """Samples of this path in the span / all samples of the span."""
    baseline_share: float = 0.0
    """Samples of this path in the baseline / all samples of the baseline."""
    children: dict[str, DiffNode] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        """``span_share - baseline_share``: positive where the span spends more than the baseline."""
        return self.span_share - self.baseline_share

    def to_json(self) -> dict[str, Any]:
        """``{"name", "value", "delta", "span_share", "baseline_share", "span_samples",
        "baseline_samples", "children"}``.

        ``value`` is the mean of both shares (so a path seen on one side only is still drawn) and
        ``delta`` the share difference, in the units d3-flame-graph's differential mode reads.
        """
        return {
            "name": self.name,
            "value": (self.span_share + self.baseline_share) / 2,
            "delta": self.delta,
            "span_share": self.span_share,
            "baseline_share": self.baseline_share,
            "span_samples": self.span_count,
            "baseline_samples": self.baseline_count,
            "children": [
                child.to_json()
                for child in sorted(
                    self.children.values(),
                    key=lambda node: (-(node.span_share + node.baseline_share), node.name),
                )
            ],
        }


def diff_tree(span: FlameNode, baseline: FlameNode) -> DiffNode:
    """Merge two flame trees by path into a :class:`DiffNode` tree of shares."""
    span_total, baseline_total = span.value, baseline.value

    def merge(name: str, left: FlameNode | None, right: FlameNode | None) -> DiffNode:
        node = DiffNode(name)
        if left is not None:
            node.span_count = left.value
            node.span_share = _share(left.value, span_total)
        if right is not None:
            node.baseline_count = right.value
            node.baseline_share = _share(right.value, baseline_total)
        left_children = left.children if left is not None else {}
        right_children = right.children if right is not None else {}
        for child in dict.fromkeys([*left_children, *right_children]):
            node.children[child] = merge(child, left_children.get(child), right_children.get(child))
        return node

    return merge(ROOT_NAME, span, baseline)


@dataclass(frozen=True)
class FunctionDelta:
    """How a function's self and total shares differ between the span and the baseline."""

    name: str
    self_share: float
    baseline_self_share: float
    total_share: float
    baseline_total_share: float

    @property
    def self_delta(self) -> float:
        """Self share in the span minus self share in the baseline."""
        return self.self_share - self.baseline_self_share

    @property
    def total_delta(self) -> float:
        """Total share in the span minus total share in the baseline."""
        return self.total_share - self.baseline_total_share

    def to_json(self) -> dict[str, Any]:
        """``{"name", "self_share", "baseline_self_share", "self_delta", "total_share",
        "baseline_total_share", "total_delta"}``."""
        return {
            "name": self.name,
            "self_share": self.self_share,
            "baseline_self_share": self.baseline_self_share,
            "self_delta": self.self_delta,
            "total_share": self.total_share,
            "baseline_total_share": self.baseline_total_share,
            "total_delta": self.total_delta,
        }


@dataclass(frozen=True)
class Diff:
    """A span compared with a baseline; see :func:`diff`."""

    span_samples: int
    baseline_samples: int
    min_samples: int
    functions: tuple[FunctionDelta, ...]
    """Functions by the larger of ``|self_delta|`` and ``|total_delta|``, largest first."""
    tree: DiffNode
    profile_type: str = CPU
    """What the samples measure (``cpu``, ``wall``): the :attr:`message` says so."""

    @property
    def comparable(self) -> bool:
        """Whether both sides have at least :attr:`min_samples` samples."""
        return min(self.span_samples, self.baseline_samples) >= self.min_samples

    @property
    def message(self) -> str | None:
        """Why the two sides cannot be compared, with the counts; ``None`` when they can."""
        if self.comparable:
            return None
        short = [
            f"the {side} has {count} sample{'s' if count != 1 else ''}"
            for side, count in (("span", self.span_samples), ("baseline", self.baseline_samples))
            if count < self.min_samples
        ]
        time = "CPU" if self.profile_type == CPU else f"{self.profile_type} time"
        return (
            f"too few samples to compare: {' and '.join(short)}, fewer than {self.min_samples}"
            f" (sampling at 100 Hz sees about one sample per 10 ms of {time}, so a shorter span"
            " leaves no trace)"
        )

    def to_json(self, *, limit: int | None = None) -> dict[str, Any]:
        """``{"span_samples", "baseline_samples", "min_samples", "comparable", "message",
        "functions": [...], "tree": {...}}``; ``limit`` caps the function list."""
        functions = self.functions if limit is None else self.functions[:limit]
        return {
            "span_samples": self.span_samples,
            "baseline_samples": self.baseline_samples,
            "min_samples": self.min_samples,
            "comparable": self.comparable,
            "message": self.message,
            "functions": [function.to_json() for function in functions],
            "tree": self.tree.to_json(),
        }


def diff(
    span: Sequence[StackCount],
    baseline: Sequence[StackCount],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    profile_type: str = CPU,
) -> Diff:
    """Compare the stacks of a span with those of a baseline, both as shares of their own total
    (samples of ``profile_type``)."""
    span_tree, baseline_tree = build_tree(span), build_tree(baseline)
    span_total, baseline_total = span_tree.value, baseline_tree.value
    left = {stat.name: stat for stat in top_functions(span)}
    right = {stat.name: stat for stat in top_functions(baseline)}
    deltas = []
    for name in dict.fromkeys([*left, *right]):
        a, b = left.get(name), right.get(name)
        deltas.append(
            FunctionDelta(
                name=name,
                self_share=_share(a.self_count, span_total) if a else 0.0,
                baseline_self_share=_share(b.self_count, baseline_total) if b else 0.0,
                total_share=_share(a.total_count, span_total) if a else 0.0,
                baseline_total_share=_share(b.total_count, baseline_total) if b else 0.0,
            )
        )
    deltas.sort(key=lambda d: (-max(abs(d.self_delta), abs(d.total_delta)), d.name))
    return Diff(
        span_samples=span_total,
        baseline_samples=baseline_total,
        min_samples=min_samples,
        functions=tuple(deltas),
        tree=diff_tree(span_tree, baseline_tree),
        profile_type=profile_type,
    )
