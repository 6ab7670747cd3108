"""The ``span-profiles`` command line, driven through ``main([...])``."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver import ProfileReader, ProfileStore
from tests.receiver.helpers import DATA, sample, series

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


@pytest.mark.e2e
def test_serve_reports_busy_port(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """serve on a port already in use exits 1 with a message instead of a traceback."""
    pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--db", str(db_path), "--quiet"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_serve_subprocess_stores_and_stops_on_interrupt(db_path: Path) -> None:
    """`serve --port 0` prints its URL, stores a real upload, and exits 0 on Ctrl-C."""
    pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "span_profiles.cli", "serve", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--db", str(db_path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "serve printed nothing"
        url = process.stdout.readline().split()[3].rstrip(",")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        body = (DATA / "burn-tags" / "0001.body").read_bytes()
        headers = {"content-type": "application/proto", "content-encoding": "gzip"}
        connection.request("POST", "/push.v1.PusherService/Push", body=body, headers=headers)
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    with ProfileReader(db_path) as reader:
        assert reader.services() == ["lab.burn1"]
