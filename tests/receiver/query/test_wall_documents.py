"""The documents of wall-clock data: each view of one type, its time named after the type, the
other type's time beside it in every row, per-type diffs and exports."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from span_profiles.receiver import ProfileReader, Selection
from span_profiles.receiver.ingest.decode import decode_pprof
from span_profiles.receiver.query import documents, exports
from span_profiles.receiver.query.documents import DiffRequest, NotFound
from tests.support.known_shares import (
    AWAIT_SITE,
    SPANS,
    WALL,
    A,
    B,
    C,
    D,
    W,
    fill,
    fill_wall,
    sample_count,
    wall_sample_count,
    wall_seconds,
)
from tests.support.receiver import PERIOD, SPEEDSCOPE_SCHEMA_FILE

ALL_WALL = Selection(profile_type="wall")


@pytest.fixture
def reader(db_path: Path) -> Iterator[ProfileReader]:
    """The known-shares store with the wall samples of A, B, C and W."""
    fill_wall(fill(db_path))
    with ProfileReader(db_path) as opened:
        yield opened


def _names(tree: dict[str, Any]) -> set[str]:
    return {tree["name"]}.union(*(_names(child) for child in tree["children"]))


def _keys(tree: dict[str, Any]) -> set[str]:
    return set(tree).union(*(_keys(child) for child in tree["children"]))


def test_a_wall_span_document_is_in_wall_seconds(reader: ProfileReader) -> None:
    """The wall document of a span: its samples, its wall seconds from the samples' nanoseconds
    (0.125 s stays 0.125 s though it is 13 periods), its await site in the tree, its CPU seconds
    beside; no key of the document names CPU time but that one."""
    doc = documents.span_json(reader, A, ALL_WALL)
    assert doc["selection"]["profile_type"] == "wall"
    assert doc["total_samples"] == doc["span"]["samples"] == wall_sample_count(A) == 49
    assert doc["wall_seconds"] == doc["span"]["wall_seconds"] == pytest.approx(0.485)
    assert doc["span"]["cpu_seconds"] == pytest.approx(sample_count(A) * PERIOD / 1e9)
    assert doc["tree"]["wall_seconds"] == pytest.approx(0.485)
    assert "cpu_seconds" not in _keys(doc["tree"])
    assert "cpu_seconds" not in doc
    assert AWAIT_SITE in _names(doc["tree"])
    assert "asyncio.tasks.sleep" in _names(doc["tree"])
    top = doc["functions"][0]
    assert (top["name"], top["self"]) == (AWAIT_SITE, 30)
    assert top["wall_seconds"] == pytest.approx(0.3)


def test_the_cpu_document_of_a_span_says_its_wall_seconds(reader: ProfileReader) -> None:
    """The CPU document is what it was, plus the span's wall seconds (``null`` without any)."""
    doc = documents.span_json(reader, A)
    assert doc["total_samples"] == sample_count(A)
    assert doc["cpu_seconds"] == pytest.approx(sample_count(A) * PERIOD / 1e9)
    assert "wall_seconds" not in _keys(doc["tree"])
    assert AWAIT_SITE not in _names(doc["tree"])
    assert doc["span"]["wall_seconds"] == pytest.approx(wall_seconds(A))
    assert documents.span_json(reader, D)["span"]["wall_seconds"] is None


def test_a_type_a_span_lacks_is_not_found_and_says_what_it_has(reader: ProfileReader) -> None:
    """A span without samples of the asked type is not found; the message names the type it has."""
    with pytest.raises(NotFound, match=f"no wall samples for span_id {D} \\(it has cpu samples\\)"):
        documents.span_json(reader, D, ALL_WALL)
    with pytest.raises(NotFound, match=f"no samples for span_id {W} \\(it has wall samples\\)"):
        documents.span_json(reader, W)
    with pytest.raises(NotFound, match=f"^no samples for span_id {'0' * 16}$"):
        documents.span_json(reader, "0" * 16)


def test_per_type_gives_each_type_or_none(reader: ProfileReader) -> None:
    """The pages' documents: one per type, ``None`` where the span has no samples of it."""
    docs = documents.per_type(lambda where: documents.span_json(reader, D, where), Selection())
    assert list(docs) == ["cpu", "wall"]
    assert docs["cpu"] is not None
    assert docs["wall"] is None
    docs = documents.per_type(lambda where: documents.span_json(reader, W, where), Selection())
    assert docs["cpu"] is None
    assert docs["wall"] is not None
    assert docs["wall"]["wall_seconds"] == pytest.approx(0.25)


def test_the_cpu_overview_shows_wall_seconds_per_endpoint_and_span(reader: ProfileReader) -> None:
    """Each CPU endpoint row carries the endpoint's wall seconds and wall time per request
    (``null`` where it has none); each top span its wall seconds. The rows and their order are
    the CPU ones: the wall-only endpoint is not among them."""
    doc = documents.overview_json(reader)
    rows = {(e["service"], e["span_name"]): e for e in doc["endpoints"]}
    assert set(rows) == {("shop", "GET /a"), ("shop", "GET /b"), ("elsewhere", "GET /a")}
    a = rows["shop", "GET /a"]
    assert a["cpu_seconds"] == pytest.approx(0.6)
    assert a["wall_seconds"] == pytest.approx(wall_seconds(A) + wall_seconds(B) + wall_seconds(C))
    assert a["wall_per_request"] == {
        "median": pytest.approx(wall_seconds(B)),
        "p95": pytest.approx(wall_seconds(A)),
    }
    assert rows["shop", "GET /b"]["wall_seconds"] is None
    assert rows["shop", "GET /b"]["wall_per_request"] is None
    spans = {s["span_id"]: s for s in doc["top_spans"]}
    assert [s["span_id"] for s in doc["top_spans"]] == [C, B, A, "eeeeeeeeeeeeeeee", D]
    assert spans[A]["wall_seconds"] == pytest.approx(wall_seconds(A))
    assert spans[D]["wall_seconds"] is None
    assert list(doc["profile_types"]) == ["cpu", "wall"]


def test_the_wall_overview_ranks_by_wall_time(reader: ProfileReader) -> None:
    """A wall overview lists what the wall sampler saw, most wall time first, with CPU beside."""
    doc = documents.overview_json(reader, ALL_WALL)
    assert doc["window"]["profile_type"] == "wall"
    assert [(e["span_name"], e["requests"]) for e in doc["endpoints"]] == [
        ("GET /a", 3),
        ("GET /wait", 1),
    ]
    wait = doc["endpoints"][1]
    assert wait["wall_seconds"] == pytest.approx(0.25)
    assert wait["cpu_seconds"] is None
    assert wait["cpu_per_request"] is None
    assert doc["endpoints"][0]["cpu_seconds"] == pytest.approx(0.6)
    assert [s["span_id"] for s in doc["top_spans"]] == [A, B, C, W]
    assert [s["cpu_seconds"] is None for s in doc["top_spans"]] == [False, False, False, True]
    assert doc["newest_arrival"] == doc["profile_types"]["wall"]


def test_the_endpoint_and_span_list_documents_per_type(reader: ProfileReader) -> None:
    """The endpoint's wall aggregate, its spans by wall time with their CPU seconds; the span
    list of wall spans."""
    doc = documents.endpoint_json(reader, "GET /a", Selection(service="shop", profile_type="wall"))
    assert doc["total_samples"] == sum(wall_sample_count(s) for s in (A, B, C))
    assert doc["endpoint"]["wall_seconds"] == pytest.approx(0.485 + 0.28 + 0.27)
    assert doc["endpoint"]["cpu_seconds"] == pytest.approx(0.6)
    assert [s["span_id"] for s in doc["spans"]] == [A, B, C]
    assert [s["cpu_seconds"] for s in doc["spans"]] == pytest.approx([0.1, 0.2, 0.3])
    assert AWAIT_SITE in _names(doc["tree"])
    listed = documents.spans_json(reader, ALL_WALL)["spans"]
    assert {s["span_id"] for s in listed} == {A, B, C, W}
    assert all("wall_seconds" in s and "cpu_seconds" in s for s in listed)


def test_a_wall_diff_compares_where_spans_waited(reader: ProfileReader) -> None:
    """A wall diff of A against the other GET /a spans: A waits on the pool for a larger share."""
    doc = documents.diff_json(reader, DiffRequest(span_id=A, profile_type="wall"))
    assert doc["span"]["profile_type"] == doc["baseline"]["profile_type"] == "wall"
    assert (doc["span_samples"], doc["baseline_samples"]) == (
        wall_sample_count(A),
        wall_sample_count(B) + wall_sample_count(C),
    )
    deltas = {f["name"]: f for f in doc["functions"]}
    assert deltas[AWAIT_SITE]["self_delta"] == pytest.approx(30 / 49 - 10 / 55)
    assert deltas["burn_a"]["self_delta"] < 0
    # W has no CPU samples: its CPU side is empty, and the message speaks of CPU.
    cpu = documents.diff_json(reader, DiffRequest(span_id=W, baseline_span_ids=(D,)))
    assert cpu["span_samples"] == 0
    assert "10 ms of CPU," in cpu["message"]
    too_few = documents.diff_json(
        reader, DiffRequest(span_id=W, baseline_span_ids=(A,), profile_type="wall", min_samples=50)
    )
    assert "10 ms of wall time" in too_few["message"]


def test_a_cpu_diff_of_a_wall_only_span_is_not_found(reader: ProfileReader) -> None:
    """Diffs work per type: a span with wall samples only has no CPU diff."""
    with pytest.raises(NotFound, match="it has wall samples"):
        documents.diff_json(reader, DiffRequest(span_id=W))


def test_wall_exports_carry_wall_nanoseconds(reader: ProfileReader) -> None:
    """pprof: wall/nanoseconds values and period type; speedscope: nanoseconds weights summing to
    the wall time, named after the type, valid; folded: the wall sample counts."""
    where = Selection(span_ids=(A,), profile_type="wall")
    data, _ = exports.export(reader, where, "pprof", title=A)
    profile = decode_pprof(gzip.decompress(data))
    assert profile.sample_types == (("samples", "count"), ("wall", "nanoseconds"))
    assert profile.period_type == ("wall", "nanoseconds")
    assert sum(s.values[1] for s in profile.samples) == 485_000_000
    assert sum(s.values[0] for s in profile.samples) == wall_sample_count(A)
    assert {s.functions for s in profile.samples} == {f for f, _ in WALL[A][2]}

    data, _ = exports.export(reader, where, "speedscope", title=A)
    document = json.loads(data)
    jsonschema.validate(document, json.loads(SPEEDSCOPE_SCHEMA_FILE.read_text()))
    (sampled,) = document["profiles"]
    assert sampled["unit"] == "nanoseconds"
    assert sum(sampled["weights"]) == 485_000_000
    assert sampled["name"] == f"{A} (wall)"

    data, _ = exports.export(reader, where, "folded", title=A)
    lines = dict(line.rsplit(" ", 1) for line in data.decode().splitlines())
    assert lines[f"main;handler;fetch_user;{AWAIT_SITE}"] == "30"
    assert sum(map(int, lines.values())) == wall_sample_count(A)

    with pytest.raises(NotFound):
        exports.export(reader, Selection(span_ids=(D,), profile_type="wall"), "folded", title=D)
    cpu, _ = exports.export(reader, Selection(span_ids=(A,)), "folded", title=A)
    assert AWAIT_SITE not in cpu.decode()
    assert sum(int(line.rsplit(" ", 1)[1]) for line in cpu.decode().splitlines()) == sum(
        count for _, count in SPANS[A][2]
    )
