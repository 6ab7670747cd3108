"""Storage under issue #11's faults: retention, the start-up race, read-only storage, a full disk."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, ProfileStore, Retention, Selection
from span_profiles.receiver.storage.retention import read_status
from tests.support.receiver import DATA, sample, series
from tests.support.servers import ROOT as REPOSITORY

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
SRC = str(REPOSITORY / "src")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CAN_UNSHARE = ROOT and shutil.which("unshare") is not None and sys.platform == "linux"


def _consistent(path: Path) -> None:
    """The rollups agree with the samples left."""
    with ProfileReader(path) as reader:
        assert reader.total_count() == sum(s.count for s in reader.samples())
        for span in reader.spans(limit=None):
            assert span.sample_count == sum(
                s.count for s in reader.samples(Selection(span_ids=(span.span_id,)))
            )


# -- retention -----------------------------------------------------------------------------------


def test_max_age_deletes_old_profiles(db_path: Path) -> None:
    """Profiles older than max_age go, with their samples, labels and aggregates."""
    now = time.time()
    with ProfileStore(db_path, retention=Retention(max_age=3600, max_bytes=None)) as store:
        store.add([series([sample(["old"], 2, [("span_id", A)])])], received_at=now - 7200)
        store.add([series([sample(["new"], 3, [("span_id", B)])])], received_at=now - 60)
        assert store.enforce_retention(now) == 1
        with ProfileReader(db_path) as reader:
            assert [s.functions for s in reader.samples()] == [("new",)]
            assert [s.span_id for s in reader.spans()] == [B]
            assert reader.top() == reader.top(Selection(span_ids=(B,)))
        _consistent(db_path)
        left = store._db.execute(
            "SELECT (SELECT COUNT(*) FROM sample_labels), (SELECT COUNT(*) FROM stacks)"
        ).fetchone()
    assert left == (1, 1)


def test_max_bytes_keeps_the_newest_and_shrinks_the_file(db_path: Path) -> None:
    """Over max_bytes the oldest profiles go until the store uses at most 90 % of it."""
    limit = 2 * 1024 * 1024
    with ProfileStore(db_path, retention=Retention(max_age=None, max_bytes=limit)) as store:
        for number in range(60):
            samples = [
                sample([f"f{number}_{i}", "main"], 1, [("span_id", f"{number:08x}{i:08x}")])
                for i in range(400)
            ]
            store.add([series(samples)], received_at=1000.0 + number)
        assert store.retention_status().used_bytes > limit
        assert store.enforce_retention() > 0
        status = store.retention_status()
        assert status.used_bytes <= limit
        assert status.newest == 1059.0
        assert status.oldest is not None
        assert status.oldest > 1000.0
        _consistent(db_path)
    # auto_vacuum=INCREMENTAL: the freed pages went back to the file system.
    assert db_path.stat().st_size <= limit * 1.1


def test_retention_status(db_path: Path) -> None:
    """retention_status reports the settings, the size and the time span (for `doctor`)."""
    retention = Retention(max_age=86400, max_bytes=10**9)
    with ProfileStore(db_path, retention=retention) as store:
        empty = store.retention_status()
        store.add([series([sample(["f"])])], received_at=50.0)
        store.add([series([sample(["f"])])], received_at=70.0)
        status = store.retention_status()
    assert (empty.profiles, empty.oldest, empty.newest) == (0, None, None)
    assert (status.max_age, status.max_bytes, status.read_only) == (86400, 10**9, False)
    assert (status.profiles, status.oldest, status.newest) == (2, 50.0, 70.0)
    assert 0 < status.used_bytes <= status.file_bytes
    read = read_status(db_path, retention)
    assert read.read_only
    assert (read.profiles, read.oldest, read.max_age) == (2, 50.0, 86400)


@pytest.mark.e2e
def test_receiver_enforces_retention_while_serving(db_path: Path) -> None:
    """The receiver deletes expired profiles at start and as uploads arrive."""
    pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")
    from span_profiles.receiver import Receiver
    from tests.support.receiver import PROTO, post, push_body

    with ProfileStore(db_path) as store:
        store.add([series([sample(["ancient"])])], received_at=time.time() - 7200)
    retention = Retention(max_age=3600, max_bytes=None, check_interval=0.0)
    with Receiver("127.0.0.1", 0, db_path, retention=retention) as receiver:
        assert receiver.reader.services() == []
        with ProfileStore(db_path) as store:
            store.add([series([sample(["expired"])])], received_at=time.time() - 7200)
        assert (
            post(
                receiver, "/push.v1.PusherService/Push", push_body(series([sample(["new"])])), PROTO
            ).status
            == 200
        )
        assert [s.functions for s in receiver.reader.samples()] == [("new",)]


# -- start-up race -------------------------------------------------------------------------------


def test_two_openers_of_a_new_database_both_succeed(tmp_path: Path) -> None:
    """Two connections creating a new database at the same instant both open it (20 rounds)."""
    for round_ in range(20):
        path = tmp_path / f"race-{round_}.db"
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def open_store(
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                with ProfileStore(path) as store:
                    store.add([series([sample(["f"])])])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        with ProfileReader(path) as reader:
            assert reader.total_count() == 2


# -- read-only storage ---------------------------------------------------------------------------


def _on_read_only_storage(directory: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``directory`` read-only: a read-only bind mount as root, else chmod."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p),
    }
    if CAN_UNSHARE:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(directory), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    if ROOT:
        pytest.skip("root ignores file modes and unshare is not available")
    mode = directory.stat().st_mode
    files = list(directory.iterdir())
    for file in files:
        file.chmod(0o444)
    directory.chmod(0o555)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    finally:
        directory.chmod(mode)
        for file in files:
            file.chmod(0o644)


@pytest.mark.e2e
def test_queries_work_on_read_only_storage(tmp_path: Path) -> None:
    """spans and top read a database on read-only storage (no -shm file can be created)."""
    directory = tmp_path / "ro"
    with ProfileStore(directory / "p.db") as store:
        store.add(
            [series([sample(["burn", "main"], 4, [("span_id", A), ("span_name", "GET /a")])])]
        )
    cli = [sys.executable, "-m", "span_profiles.cli"]
    spans = _on_read_only_storage(directory, [*cli, "spans", "--db", str(directory / "p.db")])
    assert spans.returncode == 0, spans.stderr
    assert A in spans.stdout
    top = _on_read_only_storage(
        directory, [*cli, "top", "--span-id", A, "--db", str(directory / "p.db")]
    )
    assert top.returncode == 0, top.stderr
    assert "burn" in top.stdout


@pytest.mark.e2e
def test_serve_on_read_only_storage_says_so(tmp_path: Path) -> None:
    """serve on a read-only database prints one clear line and exits 1, with no traceback."""
    pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")
    directory = tmp_path / "ro"
    with ProfileStore(directory / "p.db") as store:
        store.add([series([sample(["f"])])])
    argv = [
        sys.executable,
        "-m",
        "span_profiles.cli",
        "serve",
        "--port",
        "0",
        "--db",
        str(directory / "p.db"),
    ]
    result = _on_read_only_storage(directory, argv)
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr
    assert "Traceback" not in result.stderr


# -- disk full -----------------------------------------------------------------------------------


def test_full_database_reports_the_real_error_and_keeps_what_it_had(db_path: Path) -> None:
    """SQLITE_FULL mid-add: the error is SQLite's "full" (not "no transaction is active"),
    nothing of the call is stored, and the database stays intact and writable."""
    with ProfileStore(db_path) as store:
        store.add([series([sample(["kept"], 1, [("span_id", A)])])])
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        # The connection may not grow the file: the next big add runs out of pages.
        store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        big = [sample([f"f{i}", "main"], 1, [("span_id", B)]) for i in range(3000)]
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.add([series(big)])
        with ProfileReader(db_path) as reader:
            assert [s.functions for s in reader.samples()] == [("kept",)]
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        _consistent(db_path)
        store._db.execute("PRAGMA max_page_count = 1073741823")
        store.add([series([sample(["after"])])])
        with ProfileReader(db_path) as reader:
            assert reader.total_count() == 2


_DISK_FULL_SCRIPT = """
import http.client, json, sqlite3, sys
from pathlib import Path
from span_profiles.receiver import ProfileReader, start_receiver_in_thread
body = (Path(sys.argv[2]) / "burn-tags" / "0001.body").read_bytes()
db = Path(sys.argv[1]) / "p.db"
receiver = start_receiver_in_thread(port=0, db_path=db)
accepted, reply = 0, None
for _ in range(5000):
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    connection.request("POST", "/push.v1.PusherService/Push", body=body,
                       headers={"content-type": "application/proto", "content-encoding": "gzip"})
    response = connection.getresponse()
    text = response.read()
    connection.close()
    if response.status != 200:
        reply = (response.status, json.loads(text))
        break
    accepted += 1
receiver.stop()
with ProfileReader(db) as reader:
    check = reader.fetch("PRAGMA integrity_check")[0][0]
    profiles = reader.fetch("SELECT COUNT(*) FROM profiles")[0][0]
print(json.dumps({"accepted": accepted, "reply": reply, "check": check, "profiles": profiles}))
"""


@pytest.mark.e2e
@pytest.mark.skipif(not CAN_UNSHARE, reason="needs root and unshare for a small tmpfs")
def test_receiver_on_a_full_disk(tmp_path: Path) -> None:
    """On a real full file system (a 1 MiB tmpfs) uploads get 507 resource_exhausted naming the
    real error; every accepted upload is stored, the refused one not at all, the database is intact."""
    import json

    directory = tmp_path / "small"
    directory.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(_DISK_FULL_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p),
    }
    shell = 'mount -t tmpfs -o size=1m none "$0" && exec "$@"'
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            shell,
            str(directory),
            sys.executable,
            str(script),
            str(directory),
            str(DATA),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    status, error = outcome["reply"]
    assert status == 507
    assert error["code"] == "resource_exhausted"
    assert "full" in error["message"]
    assert "no transaction" not in error["message"]
    assert outcome["check"] == "ok"
    assert outcome["accepted"] > 0
    # One profile per accepted upload of this capture: nothing partial.
    assert outcome["profiles"] == outcome["accepted"]
