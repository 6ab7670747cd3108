"""The suite's rule, checked by tests/conftest.py: a test that starts a process, a server or the
real agent is marked ``e2e``, so that ``nox -s fast`` (``-m "not e2e"``) stays hermetic."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # it runs pytest in a subprocess

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

TESTS = """
import socket, subprocess, sys
import pytest

def test_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))

def test_no_server():
    a, b = socket.socketpair()  # what event loops do; binds nothing
    a.close(), b.close()

@pytest.mark.e2e
def test_marked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
"""


def test_unmarked_tests_that_start_a_process_or_a_server_fail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both fail at teardown with the marker to add; the marked and the hermetic ones pass."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))  # the conftest's imports
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    e2e: end to end\n")
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_process is not marked e2e but it started a process (subprocess.Popen*",
            "*test_server is not marked e2e but it bound a server socket to ('127.0.0.1', 0)*",
        ],
        consecutive=False,
    )
