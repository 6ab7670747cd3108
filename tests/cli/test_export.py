"""``span-profiles export``: files in each format, and standard output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver.ingest.decode import decode_pprof
from tests.support.known_shares import A, fill, sample_count


@pytest.fixture
def db(db_path: Path) -> Path:
    """The known-shares store."""
    return fill(db_path)


def test_export_each_format(db: Path, tmp_path: Path) -> None:
    """pprof, speedscope and folded files hold the span's samples."""
    base = ["export", "--span-id", A, "--db", str(db)]
    assert main([*base, "--format", "pprof", "-o", str(tmp_path / "a.pb.gz")]) == 0
    profile = decode_pprof(gzip.decompress((tmp_path / "a.pb.gz").read_bytes()))
    assert sum(s.values[0] for s in profile.samples) == sample_count(A)
    assert main([*base, "--format", "speedscope", "-o", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["profiles"][0]["type"] == "sampled"
    assert main([*base, "--format", "folded", "-o", str(tmp_path / "a.folded")]) == 0
    assert (tmp_path / "a.folded").read_text().count("\n") == 2


def test_export_span_name_to_stdout(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-o - writes the folded stacks of a span name to standard output."""
    args = ["export", "--span-name", "GET /b", "--format", "folded", "-o", "-", "--db", str(db)]
    assert main(args) == 0
    assert capsys.readouterr().out == "main;b_work 5\n"


def test_export_unknown_format_is_a_usage_error(db: Path) -> None:
    """--format must be one of the three."""
    with pytest.raises(SystemExit):
        main(["export", "--span-id", A, "--format", "svg", "-o", "x", "--db", str(db)])
