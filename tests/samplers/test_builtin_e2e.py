"""The built-in sampler end to end: real uvicorn, the sampler process, the real receiver.

These run on CPython 3.14+ (the nox sessions for 3.14 and 3.15), where they must not skip: a
3.14+ interpreter without a usable built-in sampler fails them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from span_profiles import _samplers
from span_profiles.receiver import ProfileReader, Receiver, Selection
from tests.support.servers import ROOT, Server, agent_env, free_port, serving

if sys.version_info < (3, 14):
    pytest.skip("the built-in sampler needs CPython 3.14+", allow_module_level=True)

httpx = pytest.importorskip("httpx")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ENDPOINTS = ("slices", "children", "thread", "sync")
SERVED_BY: dict[str, str] = {}
"""Span id -> the pid of the worker that served it (``x-pid``)."""


def test_the_builtin_sampler_can_run_here() -> None:
    ok, why = _samplers.builtin_usable()
    assert ok, why


@contextmanager
def app(receiver_url: str, log: Path, **extra: str) -> Iterator[Server]:
    """uvicorn serving tests/support/apps/builtin_app.py with the built-in sampler."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        env = agent_env(
            E2E_RECEIVER_URL=receiver_url,
            PYTHONPATH=str(ROOT),
            SPAN_PROFILES_SAMPLER="builtin",
            PYROSCOPE_UPLOAD_INTERVAL="1",
            SPAN_PROFILES_SHUTDOWN_TIMEOUT="5",
            **extra,
        )
        argv = [
            *(sys.executable, "-m", "uvicorn", "tests.support.apps.builtin_app:app"),
            *("--fd", str(sock.fileno()), "--no-access-log", "--log-level", "info"),
        ]
        with serving(argv, port=port, env=env, log=log, pass_fds=[sock.fileno()]) as server:
            sock.close()
            yield server


async def _drive(url: str, rounds: int, concurrency: int = 8) -> list[tuple[str, str, float]]:
    """``rounds`` x ``concurrency`` requests over every endpoint; (endpoint, span id, seconds)."""
    results: list[tuple[str, str, float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(endpoint: str) -> None:
            began = time.monotonic()
            response = await client.get(f"/{endpoint}")
            assert response.status_code == 200, response.text
            results.append((endpoint, response.headers["x-span-id"], time.monotonic() - began))
            SERVED_BY[response.headers["x-span-id"]] = response.headers["x-pid"]

        for _ in range(rounds):
            await asyncio.gather(*(one(ENDPOINTS[i % len(ENDPOINTS)]) for i in range(concurrency)))
    return results


def _sampler_pid(server: Server) -> int:
    deadline = time.monotonic() + 10
    while True:
        pid = httpx.get(server.url + "/sampler", timeout=10).json()["pid"]
        if pid is not None:
            return int(pid)
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.sampled
def test_each_request_gets_exactly_its_own_work(receiver: Receiver, tmp_path: Path) -> None:
    """Tasks, child tasks, asyncio.to_thread and a sync endpoint: every sample of a request's
    burn function carries that request's span id and nothing else does."""
    with app(receiver.url, tmp_path / "app.log") as server:
        requests = asyncio.run(_drive(server.url, rounds=6))
        server.stop(signal.SIGINT)
    assert "built-in sampler" not in server.output() or "cannot" not in server.output()
    span_of = {span_id: endpoint for endpoint, span_id, _ in requests}
    assert len(span_of) == len(requests)
    counts: Counter[tuple[str, str]] = Counter()
    with ProfileReader(receiver.db_path) as reader:
        for sample in reader.samples(Selection(service="builtin-e2e")):
            burns = [f for f in sample.functions if f.startswith("burn_")]
            if not burns:
                continue
            endpoint = burns[0].removeprefix("burn_")
            values = sample.label_values("span_id")
            if not values:
                kind = "unlabelled"
            elif len(values) > 1:
                kind = "multi"
            else:
                kind = "exact" if span_of.get(values[0]) == endpoint else "wrong"
            counts[(endpoint, kind)] += sample.count
    for endpoint in ENDPOINTS:
        assert counts[(endpoint, "exact")] >= 5, (endpoint, counts, server.output())
    bad = {key: n for key, n in counts.items() if key[1] != "exact"}
    assert not bad, (bad, counts)


@pytest.mark.sampled
def test_each_gunicorn_worker_gets_its_own_sampler(receiver: Receiver, tmp_path: Path) -> None:
    """Two workers (no preload: each imports the app, and so starts, after its fork): each is
    sampled by its own sampler process, and both workers' requests are labelled."""
    port = free_port()
    env = agent_env(
        E2E_RECEIVER_URL=receiver.url,
        PYTHONPATH=str(ROOT),
        SPAN_PROFILES_SAMPLER="builtin",
        PYROSCOPE_UPLOAD_INTERVAL="1",
        PYROSCOPE_REPORT_PID="true",
    )
    argv = [
        *(sys.executable, "-m", "gunicorn", "tests.support.apps.builtin_app:app"),
        *("-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}"),
        *("--graceful-timeout", "8"),
    ]
    with serving(argv, port=port, env=env, log=tmp_path / "gunicorn.log") as server:
        requests = asyncio.run(_drive(server.url, rounds=8, concurrency=8))
        # Which worker answers is up to the kernel: ask until both did (each has its sampler).
        samplers: set[int] = set()
        deadline = time.monotonic() + 15
        while len(samplers) < 2 and time.monotonic() < deadline:
            pid = httpx.get(server.url + "/sampler", timeout=10).json()["pid"]
            if pid is not None:
                samplers.add(pid)
        server.stop(signal.SIGTERM)
    assert len(samplers) == 2, (samplers, server.output())
    span_of = {span_id: endpoint for endpoint, span_id, _ in requests}
    served = Counter(SERVED_BY[span_id] for span_id in span_of)
    pids: Counter[str] = Counter()
    with ProfileReader(receiver.db_path) as reader:
        for sample in reader.samples(Selection(service="builtin-e2e")):
            values = sample.label_values("span_id")
            if values and values[0] in span_of:
                (pid,) = sample.label_values("pid")
                assert pid == SERVED_BY[values[0]], (pid, values)
                pids[pid] += sample.count
    # Which worker serves a request is up to the kernel: each that served a fair share (20 ms
    # of CPU each, a few samples) has its requests' samples, from its own sampler.
    busy = {pid for pid, count in served.items() if count >= 8}
    assert busy, served
    assert busy <= set(pids), (served, pids, server.output())


def test_killing_the_sampler_never_breaks_a_request(receiver: Receiver, tmp_path: Path) -> None:
    with app(receiver.url, tmp_path / "app.log") as server:
        asyncio.run(_drive(server.url, rounds=1))
        pid = _sampler_pid(server)
        os.kill(pid, signal.SIGKILL)
        requests = asyncio.run(_drive(server.url, rounds=3))
        assert all(seconds < 10 for _, _, seconds in requests)
        state = httpx.get(server.url + "/sampler", timeout=10).json()
        server.stop(signal.SIGINT)
    assert state["running"] is False
    log = server.output()
    assert "the sampler process exited unexpectedly" in log, log
    assert log.count("exited unexpectedly") == 1


def test_the_sampler_dies_with_the_app_even_under_sigkill(
    receiver: Receiver, tmp_path: Path
) -> None:
    with app(receiver.url, tmp_path / "app.log") as server:
        asyncio.run(_drive(server.url, rounds=1))
        pid = _sampler_pid(server)
        assert _alive(pid)
        server.process.kill()
        server.process.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "the sampler outlived the app"
            time.sleep(0.05)


@pytest.mark.skipif(
    os.uname().machine != "x86_64", reason="the test's seccomp filter is written for x86_64"
)
def test_seccomp_denying_reads_is_one_clear_line_and_requests_go_on(
    receiver: Receiver, tmp_path: Path
) -> None:
    with app(receiver.url, tmp_path / "app.log", E2E_SECCOMP_DENY_READ="1") as server:
        requests = asyncio.run(_drive(server.url, rounds=2))
        deadline = time.monotonic() + 10
        while "cannot read this process" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        server.stop(signal.SIGINT)
    assert len(requests) == 16
    log = server.output()
    assert log.count("cannot read this process") == 1, log
    assert "seccomp" in log, log
    assert "span-profiles doctor" in log


def test_a_non_dumpable_app_is_one_clear_line(tmp_path: Path) -> None:
    """Run as an unprivileged user (no CAP_SYS_PTRACE) with the process made non-dumpable."""
    script = (
        "import ctypes, logging, time, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n"
        "import span_profiles\n"
        "assert span_profiles.start_profiler(sampler='builtin', server_address='http://127.0.0.1:9')\n"
        "time.sleep(3)\n"
        "print('running' if span_profiles.profiler_running() else 'off')\n"
    )
    import subprocess

    user = 65534 if os.getuid() == 0 else None
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=agent_env(PYTHONPATH=str(ROOT / "src")),
        user=user,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "off", done.stderr
    assert done.stderr.count("cannot read this process") == 1, done.stderr
    assert "not dumpable" in done.stderr, done.stderr


def test_a_full_event_ring_never_stalls_a_request(receiver: Receiver, tmp_path: Path) -> None:
    """The sampler is stopped (SIGSTOP) while requests fill a 64-slot ring many times over."""
    with app(receiver.url, tmp_path / "app.log", E2E_RING_SLOTS="64") as server:
        asyncio.run(_drive(server.url, rounds=1))
        pid = _sampler_pid(server)
        os.kill(pid, signal.SIGSTOP)
        try:
            requests = asyncio.run(_drive(server.url, rounds=4))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(seconds < 10 for _, _, seconds in requests)
        time.sleep(2.5)
        after = asyncio.run(_drive(server.url, rounds=1))
        server.stop(signal.SIGINT)
    assert len(after) == 8
    log = server.output()
    assert "exited unexpectedly" not in log, log


def test_a_dead_receiver_never_stalls_a_request_and_the_exit_is_bounded(tmp_path: Path) -> None:
    with app("http://127.0.0.1:9", tmp_path / "app.log") as server:
        requests = asyncio.run(_drive(server.url, rounds=3))
        assert all(seconds < 10 for _, _, seconds in requests)
        began = time.monotonic()
        server.stop(signal.SIGINT)
        took = time.monotonic() - began
    assert took < 5 + 10, took  # shutdown_timeout=5 plus uvicorn's own shutdown
    assert "uploading profiles to http://127.0.0.1:9 failed" in server.output()


def test_doctor_reads_this_process_like_the_sampler(capsys: pytest.CaptureFixture[str]) -> None:
    from span_profiles.cli import main

    status = main(
        ["doctor", "--json", "--sampler", "builtin", "--server-address", "http://127.0.0.1:9"]
    )
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert status == 1  # the server is unreachable
    assert checks["sampler"]["status"] == "ok"
    assert checks["builtin"]["status"] == "ok"
    assert checks["read"]["status"] == "ok", checks["read"]
