"""Run the workload app under a real uvicorn subprocess and drive it with a lean HTTP client.

The client speaks just enough HTTP/1.1 (keep-alive, ``content-length`` and chunked bodies) to
cost the benchmark process as little CPU as possible: on a small machine the client shares the
CPUs with the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


class Server:
    """A uvicorn subprocess serving ``benchmarks._workload.app`` on a free loopback port.

    The socket is bound here and handed over with ``--fd``, so the port is known without parsing
    logs and cannot be taken in between. ``stop()`` sends SIGINT (uvicorn shuts down, ``atexit``
    flushes the agent) and kills the process group if that takes too long.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        loop: str = "auto",
        app: str = "benchmarks._workload.app:app",
        cwd: Path = ROOT,
    ) -> None:
        self.env = env
        self.loop = loop
        self.app = app
        self.cwd = cwd
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_path = Path(os.devnull)

    def start(self, stderr_path: Path, timeout: float = 20.0) -> Server:
        """Start uvicorn and wait until it answers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.stderr_path = stderr_path
        # SP_BENCH_SRC: another tree's src/ (a worktree of an older commit) goes before the
        # installed package, so one checkout's benchmark can time two versions of the library.
        path = [os.environ["SP_BENCH_SRC"]] if os.environ.get("SP_BENCH_SRC") else []
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join([*path, str(self.cwd)])}
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.app,
                    "--fd",
                    str(sock.fileno()),
                    "--loop",
                    self.loop,
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=self.cwd,
                env=env,
                pass_fds=(sock.fileno(),),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        sock.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {stderr_path.read_text()[-2000:]}")
            try:
                status, _, _ = asyncio.run(_get_once(self.port, "/slices/alpha?n=0"))
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"uvicorn did not answer: {stderr_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def pinned_cpu(self) -> int | None:
        """The CPU the server pinned its loop to (from the app's start-up line), if any."""
        match = re.search(r"pinned=True cpu=(\d+)", self.stderr_path.read_text())
        return int(match.group(1)) if match else None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT, wait for a clean exit (the agent flushes at exit); kill on timeout."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return process.returncode

    def kill(self) -> None:
        """Kill the whole process group (uvicorn and anything it started)."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to ``127.0.0.1:port``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """``GET path``; returns status, lower-cased headers and the body."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


async def _get_once(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = await Connection.open(port)
    try:
        return await connection.get(path)
    finally:
        connection.close()


@dataclass
class Load:
    """What a load run did: the requests (path, span id) and how many per second."""

    requests: list[tuple[int, str, str]] = field(default_factory=list)
    """``(rid, endpoint, span_id)`` of every completed request."""
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return len(self.requests) / self.seconds if self.seconds else 0.0


async def _load(
    port: int,
    path_for: Callable[[str, int], str],
    concurrency: int,
    duration: float,
    first_rid: int,
    unique: bool,
) -> Load:
    load = Load()
    next_rid = first_rid
    stop_at = time.perf_counter() + duration

    async def worker(index: int) -> None:
        nonlocal next_rid
        endpoint = "alpha" if index % 2 == 0 else "beta"
        connection = await Connection.open(port)
        try:
            while time.perf_counter() < stop_at:
                rid = 0
                if unique:
                    rid = next_rid
                    next_rid += 1
                status, headers, _ = await connection.get(path_for(endpoint, rid))
                if status != 200:
                    load.errors += 1
                    continue
                load.requests.append((rid, endpoint, headers.get("x-span-id", "")))
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    load.seconds = time.perf_counter() - started
    return load


def run_load(
    port: int,
    path_for: Callable[[str, int], str],
    *,
    concurrency: int = 20,
    duration: float = 5.0,
    first_rid: int = 1,
    unique: bool = True,
    avoid_cpu: int | None = None,
) -> Load:
    """``concurrency`` clients alternating endpoints alpha/beta, each on its own connection.

    ``avoid_cpu``: keep this process off that CPU meanwhile (the server's pinned loop CPU), so
    the client does not steal the time it measures.
    """
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if mask is not None and avoid_cpu is not None and mask - {avoid_cpu}:
        os.sched_setaffinity(0, mask - {avoid_cpu})
    try:
        return _run_load(port, path_for, concurrency, duration, first_rid, unique)
    finally:
        if mask is not None and avoid_cpu is not None:
            os.sched_setaffinity(0, mask)


def _run_load(
    port: int,
    path_for: Callable[[str, int], str],
    concurrency: int,
    duration: float,
    first_rid: int,
    unique: bool,
) -> Load:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    coro = _load(port, path_for, concurrency, duration, first_rid, unique)
    if loop_factory is None:
        return asyncio.run(coro)
    loop = loop_factory()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
