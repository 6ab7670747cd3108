"""Real servers for end-to-end tests: a subprocess on a loopback port, bounded, always killed.

Tests that use these start a subprocess and a server, so they are marked ``e2e``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""


AGENT_ENV = ("PYROSCOPE_", "SPAN_PROFILES_", "OTEL_")
"""Prefixes of the variables that configure the agent, span-profiles and OTel."""


def agent_env(**extra: str) -> dict[str, str]:
    """This environment without the suite's agent switches, plus ``extra``.

    The shared conftest switches the agent off for tests (``SPAN_PROFILES_PROFILER=off``); a child
    that runs the real agent starts from this and configures it itself. It runs pyroscope-io
    (``SPAN_PROFILES_SAMPLER=pyroscope``: on CPython 3.14 ``auto`` would take the built-in
    sampler) unless ``extra`` says otherwise.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(AGENT_ENV)}
    env["SPAN_PROFILES_SAMPLER"] = "pyroscope"
    env.update(extra)
    return env


def run_agent_script(
    script: str, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with :func:`agent_env` (plus ``env``); fail on a
    non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=agent_env(**env),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process started by :func:`serving`."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        """``http://127.0.0.1:<port>``."""
        self.log = log
        """Where the server's stdout and stderr go."""

    def output(self) -> str:
        """What the server wrote so far (stdout and stderr), for failure messages."""
        return self.log.read_text(errors="replace")[-6000:]

    @contextmanager
    def client_off_its_loop_cpu(self) -> Iterator[None]:
        """Keep the calling thread (the test's client) off the CPU the server pinned its main
        thread to (its event loop, next to the sampler) while the block runs; nothing changes
        when the server did not pin.

        ``benchmarks/fidelity.py`` keeps its load generator off that CPU for the same reason: a
        client competing for it delays the agent's labelling thread behind the loop thread, and
        the test would measure that skew rather than the labels (``test_agent_e2e`` on Python
        3.14: 1.09 % foreign samples with the client there, 0.47 % with it elsewhere;
        ``benchmarks/README.md``). Call it once the app is up: it pins at lifespan startup.
        """
        if not hasattr(os, "sched_setaffinity"):
            yield
            return
        mask = os.sched_getaffinity(0)
        pinned = os.sched_getaffinity(self.process.pid)
        others = mask - pinned
        if len(pinned) == 1 and others:
            os.sched_setaffinity(0, others)
        try:
            yield
        finally:
            os.sched_setaffinity(0, mask)

    def stop(self, sig: signal.Signals, *, timeout: float = 20.0) -> None:
        """Ask the server to shut down gracefully and check that it exits with status 0."""
        self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server ignored {sig.name} for {timeout}s:\n{self.output()}")
        assert status == 0, f"server exited with {status}:\n{self.output()}"


@contextmanager
def serving(
    argv: Sequence[str],
    *,
    port: int,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    ready_path: str | None = None,
    timeout: float = 30.0,
    pass_fds: Sequence[int] = (),
) -> Iterator[Server]:
    """Start ``argv`` in ``cwd`` in a new session; yield the server once it is ready.

    Ready means ``ready_path`` answers 200, or without one, that ``port`` accepts connections.
    The whole process group (gunicorn's workers too) is killed on the way out, whatever happens.

    Args:
        argv: the command; it must listen on 127.0.0.1 at ``port``.
        port: see :func:`free_port`.
        cwd: where to run it (default: the repository root).
        env: its whole environment (default: this process's).
        log: the file its output goes to (default: a temporary one).
        ready_path: a path that answers 200 once the app is up.
        timeout: seconds it may take to get ready.
        pass_fds: file descriptors it inherits, such as a listening socket for uvicorn's ``--fd``.
    """
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(os.environ if env is None else env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        server = Server(process, url, log)
        try:
            _wait_ready(server, port, ready_path, timeout)
            yield server
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_ready(server: Server, port: int, ready_path: str | None, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.output()}")
        if ready_path is None:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        else:
            with suppress(httpx.TransportError):
                if httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                    return
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready on port {port} within {timeout}s:\n{server.output()}")
        time.sleep(0.05)
