"""``span-profiles serve``: the receiver run from the command line."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from span_profiles.cli import main
from span_profiles.receiver import ProfileReader
from tests.support.receiver import DATA
from tests.support.servers import ROOT

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


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
    src = str(ROOT / "src")
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
