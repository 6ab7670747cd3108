"""``span-profiles top`` and ``span-profiles spans``, driven through ``main([...])``."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver import ProfileStore
from tests.support.receiver import sample, series

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


@pytest.fixture
def filled_db(db_path: Path) -> Path:
    """A database with two spans of service ``shop`` and one sample of another service."""
    now = time.time()
    with ProfileStore(db_path) as store:
        store.add(
            [
                series(
                    [
                        sample(
                            ["burn_a", "handler", "main"],
                            6,
                            [("span_id", A), ("span_name", "GET /a")],
                        ),
                        sample(["a_very_long_function_name", "main"], 3, [("span_id", A)]),
                        sample(
                            ["burn_b", "handler", "main"],
                            2,
                            [("span_id", B), ("span_name", "GET /b")],
                        ),
                    ],
                    service="shop",
                )
            ],
            received_at=now - 30,
        )
        store.add(
            [series([sample(["elsewhere"], 9, [("span_id", B)])], service="other")], received_at=now
        )
    return db_path


def test_top_span_id_text(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """top --span-id prints the span's functions by self count in right-aligned columns."""
    assert main(["top", "--span-id", A, "--db", str(filled_db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"9 samples for span_id {A}"
    header, *rows = lines[1:]
    assert header.split() == ["SELF", "SELF%", "TOTAL", "TOTAL%", "FUNCTION"]
    assert [row.split()[-1] for row in rows] == [
        "burn_a",
        "a_very_long_function_name",
        "main",
        "handler",
    ]
    assert rows[0].split()[:4] == ["6", "66.7%", "6", "66.7%"]
    # Aligned: every function name starts in the FUNCTION column, numbers end under their header.
    start = header.index("FUNCTION")
    assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows)
    end = header.index("TOTAL%") + len("TOTAL%")
    assert all(row[end - 1] == "%" for row in rows)


def test_top_json_and_filters(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """top --json reports the filter, the total and the functions; --service narrows it."""
    assert main(["top", "--span-id", B, "--service", "shop", "--json", "--db", str(filled_db)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total_count"] == 2
    assert document["filter"]["service"] == "shop"
    assert document["functions"][0] == {"name": "burn_b", "self_count": 2, "total_count": 2}
    assert main(["top", "--span-id", B, "--json", "--limit", "1", "--db", str(filled_db)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total_count"] == 11
    assert document["functions"] == [{"name": "elsewhere", "self_count": 9, "total_count": 9}]


def test_top_span_name(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """top --span-name selects samples by their span_name label."""
    assert main(["top", "--span-name", "GET /b", "--db", str(filled_db)]) == 0
    out = capsys.readouterr().out
    assert "2 samples for span_name 'GET /b'" in out
    assert "burn_b" in out
    assert "burn_a" not in out


def test_top_time_window(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since as an age and as an ISO time both exclude older uploads."""
    assert main(["top", "--span-id", B, "--since", "10s", "--json", "--db", str(filled_db)]) == 0
    assert json.loads(capsys.readouterr().out)["total_count"] == 9
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert main(["top", "--span-id", B, "--since", future, "--db", str(filled_db)]) == 0
    assert capsys.readouterr().out == f"no samples for span_id {B}\n"
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["top", "--span-id", B, "--until", past, "--db", str(filled_db)]) == 0
    assert capsys.readouterr().out.startswith("no samples")


def test_spans_text(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """spans prints span ids newest first with name, count and time in aligned columns, one row
    per span and service (as the web UI lists them)."""
    assert main(["spans", "--db", str(filled_db)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["SPAN_ID", "SPAN_NAME", "SAMPLES", "LAST_SEEN"]
    assert [row.split()[:-1] for row in rows] == [
        [B, "-", "9"],
        [A, "GET", "/a", "9"],
        [B, "GET", "/b", "2"],
    ]
    end = header.index("SAMPLES") + len("SAMPLES")
    assert all(row[end - 1].isdigit() and row[end] == " " for row in rows)


def test_spans_json(filled_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """spans --json lists span ids with counts; --service and --limit apply."""
    assert main(["spans", "--service", "shop", "--json", "--db", str(filled_db)]) == 0
    spans = json.loads(capsys.readouterr().out)["spans"]
    assert [(s["span_id"], s["span_name"], s["sample_count"]) for s in spans] == [
        (A, "GET /a", 9),
        (B, "GET /b", 2),
    ]
    assert all(isinstance(s["last_seen"], float) for s in spans)
    assert main(["spans", "--limit", "1", "--json", "--db", str(filled_db)]) == 0
    assert len(json.loads(capsys.readouterr().out)["spans"]) == 1


def test_empty_database(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty database gives a clear 'no spans' message and exit status 0."""
    ProfileStore(db_path).close()
    assert main(["spans", "--db", str(db_path)]) == 0
    assert capsys.readouterr().out == "no spans\n"


def test_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Querying a database that does not exist exits 1 without creating it."""
    missing = tmp_path / "nope" / "profiles.db"
    assert main(["spans", "--db", str(missing)]) == 1
    assert "no database" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["top"], "--span-id"),
        (["top", "--span-id", "ABCDEF0123456789"], "--span-id"),
        (["top", "--span-id", A, "--span-name", "x"], "--span-name"),
        (["top", "--span-id", A, "--limit", "0"], "--limit"),
        (["top", "--span-id", A, "--since", "yesterday"], "--since"),
        (["spans", "--until", "2026-13-45"], "--until"),
        (["spans", "--limit", "many"], "--limit"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--max-body-bytes", "-5"], "--max-body-bytes"),
        ([], "COMMAND"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_invalid_arguments_exit_2(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments end in an argparse error naming the option, with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
