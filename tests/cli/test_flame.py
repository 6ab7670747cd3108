"""``span-profiles flame``: a self-contained HTML flame graph file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from span_profiles.cli import main
from tests.support.known_shares import A, fill, sample_count


@pytest.fixture
def db(db_path: Path) -> Path:
    """The known-shares store."""
    return fill(db_path)


def embedded_tree(html: str, kind: str = "cpu") -> dict[str, object]:
    """The flame tree JSON of one profile type's tab embedded in a page."""
    pattern = rf'<script type="application/json" id="flame-{kind}-data">(.*?)</script>'
    match = re.search(pattern, html, re.S)
    assert match is not None
    tree: dict[str, object] = json.loads(match.group(1))
    return tree


def test_flame_span_id_writes_a_self_contained_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file inlines d3, d3-flame-graph and the page script, and loads nothing from outside."""
    out = tmp_path / "a.html"
    assert main(["flame", "--span-id", A, "-o", str(out), "--db", str(db)]) == 0
    assert f"flame graph of span {A}" in capsys.readouterr().out
    html = out.read_text()
    assert "<script src=" not in html
    assert '<link rel="stylesheet"' not in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "d3-flame-graph" in html  # the library's own styles, inlined
    assert "spanProfilesFlame" in html
    tree = embedded_tree(html)
    assert tree["value"] == sample_count(A)


def test_flame_span_name_aggregates(db: Path, tmp_path: Path) -> None:
    """--span-name with --service writes the endpoint's aggregate."""
    out = tmp_path / "a.html"
    args = ["flame", "--span-name", "GET /a", "--service", "shop", "-o", str(out), "--db", str(db)]
    assert main(args) == 0
    assert embedded_tree(out.read_text())["value"] == 60


def test_flame_without_samples_fails_cleanly(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown span writes nothing and says why."""
    out = tmp_path / "none.html"
    assert main(["flame", "--span-id", "0" * 16, "-o", str(out), "--db", str(db)]) == 1
    assert "no samples" in capsys.readouterr().err
    assert not out.exists()


def test_flame_needs_a_span(db: Path, tmp_path: Path) -> None:
    """Neither --span-id nor --span-name is a usage error."""
    with pytest.raises(SystemExit) as info:
        main(["flame", "-o", str(tmp_path / "x.html"), "--db", str(db)])
    assert info.value.code == 2
