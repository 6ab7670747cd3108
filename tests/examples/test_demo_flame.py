"""The demo ends with a flame graph of its most expensive request and the UI address;
``--serve`` keeps the UI up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytest.importorskip("fastapi")

pytestmark = [pytest.mark.profiles, pytest.mark.e2e]

DEMO = ROOT / "examples" / "demo.py"


def test_demo_writes_the_top_request_flame_graph(tmp_path: Path) -> None:
    """--json reports the top-CPU request, its flame graph file and the UI address."""
    result = subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "3", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    top = report["top_cpu_request"]
    flame = Path(top["flame_graph"])
    assert flame == (tmp_path / "span-profiles-demo" / "top-request.html").resolve()
    html = flame.read_text()
    assert top["span_id"] in html
    assert "<script src=" not in html
    assert report["ui"]["url"].startswith("http://127.0.0.1:")
    assert report["ui"]["serving"] is False


def test_demo_serve_keeps_the_ui_up(tmp_path: Path) -> None:
    """--serve prints the UI address last and serves the overview until SIGINT."""
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--seconds", "2", "--serve", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            match = re.match(r"Web UI: (http://127\.0\.0\.1:\d+/)  \(up until Ctrl-C\)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None, "the demo did not print the UI address"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert "GET /checkout" in page
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
