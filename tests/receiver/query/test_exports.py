"""Exports: pprof decodes with protobuf and holds exactly the span's samples; speedscope
validates against its schema; folded totals equal the sample count."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from span_profiles.receiver import ProfileReader, Selection
from span_profiles.receiver.ingest.decode import decode_pprof
from span_profiles.receiver.query.exports import (
    SPEEDSCOPE_SCHEMA,
    to_folded,
    to_pprof,
    to_speedscope,
)
from span_profiles.receiver.query.samples import iter_samples
from span_profiles.receiver.query.stacks import stack_counts
from tests.support.known_shares import SPANS, A, B, fill, sample_count
from tests.support.receiver import SPEEDSCOPE_SCHEMA_FILE

SCHEMA = SPEEDSCOPE_SCHEMA_FILE


@pytest.fixture
def store(db_path: Path) -> ProfileReader:
    """The shared known-shares store, open."""
    fill(db_path)
    return ProfileReader(db_path)


@pytest.mark.parametrize("span_id", [A, B])
def test_pprof_holds_exactly_the_span_samples(store: ProfileReader, span_id: str) -> None:
    """Every decoded pprof sample is one of the span's stored samples, and none is missing."""
    data = to_pprof(iter_samples(store, Selection(span_ids=(span_id,))))
    assert data[:2] == b"\x1f\x8b"
    profile = decode_pprof(gzip.decompress(data))
    assert profile.sample_types == (("samples", "count"), ("cpu", "nanoseconds"))
    got: Counter[tuple[str, ...]] = Counter()
    for s in profile.samples:
        assert dict(s.labels)["span_id"] == span_id
        got[s.functions] += s.values[0]
    expected = Counter({functions: count for functions, count in SPANS[span_id][2]})
    assert got == expected
    stored = Counter(
        sample.functions
        for sample in store.samples(Selection(span_ids=(span_id,)))
        for _ in range(1)  # one pprof sample per stored sample
    )
    assert Counter(s.functions for s in profile.samples) == stored
    assert sum(s.values[1] for s in profile.samples) == sample_count(span_id) * 10_000_000


def test_speedscope_validates_against_the_schema(store: ProfileReader) -> None:
    """The speedscope export carries $schema and validates against speedscope's own schema."""
    document = to_speedscope(
        stack_counts(store, Selection(span_ids=(A,))), "span aaaa", exporter="span-profiles test"
    )
    assert document["$schema"] == SPEEDSCOPE_SCHEMA
    schema = json.loads(SCHEMA.read_text())
    file_schema = {**schema, "$ref": "#/definitions/FileFormat.File"}
    jsonschema.validate(json.loads(json.dumps(document)), file_schema)
    profile = document["profiles"][0]
    names = [f["name"] for f in document["shared"]["frames"]]
    stacks = sorted(tuple(names[i] for i in sample) for sample in profile["samples"])
    assert stacks == [("main", "handler", "burn_a"), ("main", "slow_io")]
    assert profile["endValue"] == sum(profile["weights"]) == 10 * 10_000_000


def test_speedscope_schema_rejects_a_broken_file() -> None:
    """The shipped schema is strict enough to catch a missing field (the test can fail)."""
    schema = {**json.loads(SCHEMA.read_text()), "$ref": "#/definitions/FileFormat.File"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"$schema": SPEEDSCOPE_SCHEMA, "profiles": []}, schema)


@pytest.mark.parametrize("span_id", [A, B])
def test_folded_totals_equal_the_sample_count(store: ProfileReader, span_id: str) -> None:
    """Folded lines are ``root;...;leaf N`` and their counts sum to the span's samples."""
    text = to_folded(stack_counts(store, Selection(span_ids=(span_id,))))
    lines = text.splitlines()
    assert all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == sample_count(span_id)
    assert (
        "main;handler;burn_a " + str(dict(SPANS[span_id][2])[("burn_a", "handler", "main")])
        in lines
    )
