"""``--type cpu|wall`` on ``spans``, ``top``, ``flame``, ``diff`` and ``export``."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver.ingest.decode import decode_pprof
from tests.support.known_shares import (
    AWAIT_SITE,
    A,
    B,
    C,
    D,
    W,
    fill,
    fill_wall,
    sample_count,
    wall_sample_count,
)


@pytest.fixture
def db(db_path: Path) -> str:
    """The known-shares store with its wall samples."""
    return str(fill_wall(fill(db_path)))


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json"]) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_spans_and_top_per_type(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``spans --type wall`` lists the spans with wall samples; ``top --type wall`` a span's wall
    functions; without ``--type``, CPU as before."""
    spans = _json(capsys, "spans", "--type", "wall", "--db", db)
    assert spans["profile_type"] == "wall"
    listed = {s["span_id"]: s for s in spans["spans"]}  # type: ignore[attr-defined]
    assert set(listed) == {A, B, C, W}
    assert listed[A]["sample_count"] == wall_sample_count(A)
    assert listed[A]["wall_seconds"] == pytest.approx(0.485)
    cpu = _json(capsys, "spans", "--db", db)
    assert W not in {s["span_id"] for s in cpu["spans"]}  # type: ignore[attr-defined]
    top = _json(capsys, "top", "--span-id", A, "--type", "wall", "--db", db)
    assert top["filter"]["profile_type"] == "wall"  # type: ignore[index]
    assert top["total_count"] == wall_sample_count(A)
    assert top["functions"][0]["name"] == AWAIT_SITE  # type: ignore[index]
    assert main(["top", "--span-id", A, "--type", "wall", "--db", db]) == 0
    assert capsys.readouterr().out.startswith(
        f"{wall_sample_count(A)} wall samples for span_id {A}"
    )
    assert main(["top", "--span-id", D, "--type", "wall", "--db", db]) == 0
    assert capsys.readouterr().out == f"no wall samples for span_id {D}\n"
    assert main(["top", "--span-id", A, "--db", db]) == 0
    assert capsys.readouterr().out.startswith(f"{sample_count(A)} samples for span_id {A}")


def test_flame_writes_the_asked_type_first(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``flame --type wall`` writes the span's page with its wall tab shown and both trees; a span
    without wall samples writes nothing and says what it has."""
    out = tmp_path / "wall.html"
    assert main(["flame", "--span-id", A, "--type", "wall", "-o", str(out), "--db", db]) == 0
    assert "(wall)" in capsys.readouterr().out
    html = out.read_text()
    assert re.search(r'id="tab-wall"[^>]*aria-selected="true"', html)
    wall = re.search(r'id="flame-wall-data">(.*?)</script>', html, re.S)
    cpu = re.search(r'id="flame-cpu-data">(.*?)</script>', html, re.S)
    assert wall is not None
    assert cpu is not None
    assert json.loads(wall.group(1))["value"] == wall_sample_count(A)
    assert json.loads(cpu.group(1))["value"] == sample_count(A)
    assert AWAIT_SITE in wall.group(1)
    none = tmp_path / "none.html"
    assert main(["flame", "--span-id", D, "--type", "wall", "-o", str(none), "--db", db]) == 1
    assert f"no wall samples for span_id {D} (it has cpu samples)" in capsys.readouterr().err
    assert not none.exists()
    endpoint = tmp_path / "wait.html"
    args = ["flame", "--span-name", "GET /wait", "--type", "wall", "-o", str(endpoint)]
    assert main([*args, "--db", db]) == 0
    assert main(["flame", "--span-name", "GET /wait", "-o", str(endpoint), "--db", db]) == 1
    assert "no samples for span_name 'GET /wait'" in capsys.readouterr().err


def test_diff_and_export_per_type(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``diff --type wall`` compares wall samples; ``export --type wall`` writes wall data."""
    doc = _json(capsys, "diff", "--span-id", A, "--type", "wall", "--db", db)
    assert doc["span"]["profile_type"] == "wall"  # type: ignore[index]
    assert doc["span_samples"] == wall_sample_count(A)
    assert doc["baseline_samples"] == wall_sample_count(B) + wall_sample_count(C)
    deltas = {f["name"]: f["self_delta"] for f in doc["functions"]}  # type: ignore[attr-defined]
    assert deltas[AWAIT_SITE] == pytest.approx(30 / 49 - 10 / 55)
    assert main(["diff", "--span-id", A, "--type", "wall", "--db", db]) == 0
    assert (
        f"span:     span_id {A} (wall): {wall_sample_count(A)} samples" in capsys.readouterr().out
    )
    out = tmp_path / "a.pb.gz"
    args = ["export", "--span-id", A, "--type", "wall", "--format", "pprof", "-o", str(out)]
    assert main([*args, "--db", db]) == 0
    profile = decode_pprof(gzip.decompress(out.read_bytes()))
    assert profile.sample_types == (("samples", "count"), ("wall", "nanoseconds"))
    assert sum(s.values[1] for s in profile.samples) == 485_000_000


def test_an_unknown_type_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--type`` takes cpu or wall; anything else exits 2 naming them."""
    for command in (["spans"], ["top", "--span-id", A], ["export", "--span-id", A]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--type", "memory", "--db", db])
        assert info.value.code == 2
        error = capsys.readouterr().err
        assert "argument --type: invalid choice: 'memory'" in error
        assert re.search(r"choose from '?cpu'?, '?wall'?\)", error)
