"""End to end: real uvicorn, real pyroscope-io agent, real receiver; each span gets its own CPU."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("google.protobuf")
httpx = pytest.importorskip("httpx")

from span_profiles.receiver import ProfileReader, Receiver, Selection  # noqa: E402
from tests.support.servers import ROOT, Server, agent_env, serving  # noqa: E402

pytestmark = pytest.mark.agent

ROUNDS = 2
CONCURRENCY = 20


@contextmanager
def uvicorn_serving(receiver: Receiver, log: Path, middleware: str) -> Iterator[Server]:
    """uvicorn on a socket bound here (``--fd``, so no other process can take the port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        # The shared conftest switches the agent off for tests; this server opts in.
        env = agent_env(
            E2E_RECEIVER_URL=receiver.url, E2E_MIDDLEWARE=middleware, PYTHONPATH=str(ROOT)
        )
        argv = [
            *(sys.executable, "-m", "uvicorn", "tests.support.apps.starlette_app:app"),
            *("--fd", str(sock.fileno()), "--no-access-log", "--log-level", "warning"),
        ]
        with serving(argv, port=port, env=env, log=log, pass_fds=[sock.fileno()]) as server:
            sock.close()  # uvicorn has its own copy
            yield server


async def wait_up(url: str) -> None:
    """Wait until the app answers (its lifespan startup, where the profiler starts, is done)."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.get("/missing")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def drive(url: str) -> list[tuple[str, str]]:
    """ROUNDS x CONCURRENCY requests, half alpha, half beta, at once."""
    results: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:

        async def one(endpoint: str) -> None:
            response = await client.get(f"/{endpoint}")
            assert response.status_code == 200
            results.append((endpoint, response.headers["x-span-id"]))

        for _ in range(ROUNDS):
            await asyncio.gather(
                *(one("alpha" if i % 2 == 0 else "beta") for i in range(CONCURRENCY))
            )
    return results


@pytest.mark.e2e
@pytest.mark.sampled
@pytest.mark.parametrize("middleware", ["auto", "otel"])
def test_each_request_profile_holds_only_its_own_work(
    receiver: Receiver, tmp_path: Path, middleware: str
) -> None:
    """Every request's span profile holds its endpoint's function; the other's only at skew level."""
    with uvicorn_serving(receiver, tmp_path / "uvicorn.log", middleware) as server:
        asyncio.run(asyncio.wait_for(wait_up(server.url), 25))
        with server.client_off_its_loop_cpu():
            requests = asyncio.run(asyncio.wait_for(drive(server.url), 45))
        server.stop(signal.SIGINT)  # clean exit: atexit flushes the agent's last window
    assert len(requests) == ROUNDS * CONCURRENCY
    assert len({span_id for _, span_id in requests}) == len(requests)
    own = {"alpha": "burn_alpha", "beta": "burn_beta"}
    right = wrong = 0
    with ProfileReader(receiver.db_path) as store:
        assert store.services() == ["e2e-starlette"]
        for endpoint, span_id in requests:
            found: Counter[str] = Counter()
            for sample in store.samples(Selection(span_ids=(span_id,))):
                assert sample.label_values("span_id") == (span_id,), sample.labels
                for name in set(sample.functions) & set(own.values()):
                    found[name] += sample.count
            other = own["beta" if endpoint == "alpha" else "alpha"]
            assert found[own[endpoint]] > found[other], (endpoint, span_id, found)
            right += found[own[endpoint]]
            wrong += found[other]
    # The sampler reads a stack and its labels ~0.1 ms apart; pinned next to the loop thread,
    # that skew still mislabels ~0.1-0.4 % of samples (benchmarks/fidelity.py), so a strict
    # "never" would fail about one run in twenty. Unlabelled-per-step code mislabels ~20 %.
    assert wrong <= max(1, 0.01 * (right + wrong)), (right, wrong)
    assert right >= 100, right
