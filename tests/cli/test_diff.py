"""``span-profiles diff``: text, --json and --html against a baseline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver import ProfileStore
from tests.support.known_shares import A, B, C, D, fill
from tests.support.receiver import sample, series


@pytest.fixture
def db(db_path: Path) -> Path:
    """The known-shares store."""
    return fill(db_path)


def test_diff_text_default_baseline(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text lists both sides' counts and the functions that moved most, with signs."""
    assert main(["diff", "--span-id", A, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "10 samples" in out
    assert "50 samples" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("SELF"))
    rows = lines[header + 1 : header + 4]
    slow = next(row for row in rows if row.endswith("slow_io"))
    burn = next(row for row in rows if row.endswith("burn_a"))
    assert "+34.0" in slow
    assert "-30.0" in burn


def test_diff_json_explicit_baseline(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Repeated --baseline-span-id give the baseline; --json has the documented keys."""
    args = ["diff", "--span-id", A, "--baseline-span-id", B, "--baseline-span-id", C]
    assert main([*args, "--json", "--db", str(db)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["baseline"]["span_ids"] == [B, C]
    assert (doc["span_samples"], doc["baseline_samples"]) == (10, 50)
    assert set(doc) >= {"functions", "tree", "comparable", "message", "min_samples"}
    assert doc["functions"][0]["name"] in {"slow_io", "handler"}


def test_diff_too_few_samples(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 5-sample span: it says so with both counts instead of ranking noise."""
    assert main(["diff", "--span-id", D, "--baseline-span-name", "GET /a", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "too few samples" in out
    assert "span has 5 samples" in out
    assert "SELF" not in out


def test_diff_span_name_against_an_earlier_window(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--span-name with --baseline-since/--baseline-until: an endpoint before and after."""
    now = time.time()
    with ProfileStore(db_path) as store:
        before = [sample(["parse", "main"], 80, [("span_name", "GET /x")])]
        before.append(sample(["render", "main"], 20, [("span_name", "GET /x")]))
        after = [sample(["parse", "main"], 20, [("span_name", "GET /x")])]
        after.append(sample(["render", "main"], 80, [("span_name", "GET /x")]))
        store.add([series(before)], received_at=now - 2 * 86400 + 60)
        store.add([series(after)], received_at=now - 60)
    args = ["diff", "--span-name", "GET /x", "--since", "1h", "--baseline-since", "2d"]
    assert main([*args, "--baseline-until", "1d", "--json", "--db", str(db_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {f["name"]: f for f in doc["functions"]}
    assert by_name["render"]["self_delta"] == pytest.approx(0.6)
    assert by_name["parse"]["self_delta"] == pytest.approx(-0.6)


def test_diff_span_name_needs_a_baseline(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A span name alone has nothing to compare with: exit 1 and a reason."""
    assert main(["diff", "--span-name", "GET /a", "--db", str(db)]) == 1
    assert "earlier window" in capsys.readouterr().err


def test_diff_html(db: Path, tmp_path: Path) -> None:
    """--html -o writes a self-contained diff flame graph; --html without -o is refused."""
    out = tmp_path / "diff.html"
    assert main(["diff", "--span-id", A, "--html", "-o", str(out), "--db", str(db)]) == 0
    html = out.read_text()
    assert 'data-mode="diff"' in html
    assert "<script src=" not in html
    assert '"delta"' in html
    assert main(["diff", "--span-id", A, "--html", "--db", str(db)]) == 1
