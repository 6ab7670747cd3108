"""examples/demo.py end to end: receiver, uvicorn, traffic, graceful stop, per-span report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.example_servers import EXAMPLES

pytest.importorskip("pyroscope")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("google.protobuf")

pytestmark = [pytest.mark.e2e, pytest.mark.sampled]

DEMO = EXAMPLES / "demo.py"
ENDPOINTS = ["GET /checkout", "GET /search", "GET /report", "GET /items/{item_id}"]


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the demo with a short burst of traffic, from ``cwd``, bounded in time."""
    env = {**os.environ, "SPAN_PROFILES_PROFILER": "off"}  # the demo must switch it on itself
    return subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "4", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_text_report_shows_each_endpoint_and_single_spans(tmp_path: Path) -> None:
    """Run from an unrelated directory, the demo reports every endpoint's and single spans' top functions, each span holding its own code."""
    result = run_demo(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for endpoint in ENDPOINTS:
        assert f"  {endpoint}  (" in out, out
    for function in ("burn_checkout", "burn_pricing", "burn_search", "render_report"):
        assert function in out, out
    assert out.count("  span ") >= 6, out  # two single requests per CPU endpoint
    assert "Own code only: " in out, out
    assert "mixed:" not in out, out


def test_demo_json_report_checks_out(tmp_path: Path) -> None:
    """The --json report attributes each endpoint's function to it alone and proves the shutdown flush."""
    result = run_demo("--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["service"] == "example-fastapi"
    own = {
        "GET /checkout": "burn_checkout",
        "GET /search": "burn_search",
        "GET /report": "render_report",
    }
    for endpoint, function in own.items():
        top = [f["function"] for f in report["endpoints"][endpoint]["top"]]
        assert function in top, (endpoint, top)
        others = set(own.values()) - {function}
        assert not others & set(top), (endpoint, top)
    for span in report["spans"]:
        assert own[span["span_name"]] in [f["function"] for f in span["top"]], span
    check = report["own_code_check"]
    assert check["spans_checked"] > 10, check
    assert check["own_only"] == check["spans_checked"], check
    # The request in flight at SIGINT: its samples came with the agent's shutdown upload.
    assert report["last_window"]["samples_after_sigint"] > 0, report["last_window"]
