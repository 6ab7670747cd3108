"""End to end on a real app: FastAPI + SQLAlchemy async + asyncpg against a real PostgreSQL.

uvicorn on uvloop and on the stdlib loop, FastAPI's built-in telemetry off and on (with its
default ``operation_spans``), a real sampler and the receiver; 12 clients send the endpoint mix of
``tests/support/realapp.py`` for a few seconds, then every sample is judged by its stack. A request's
profile must hold its endpoint's work, the driver's row decoding included, and nothing of other
endpoints; no sample may carry a bare-method ``span_name``.

The sampler is the one ``sampler="auto"`` picks on this Python (pyroscope-io on 3.10-3.13, the
built-in one on 3.14+ where it may read the app, the only one on 3.15), named to the app
explicitly so that the run is known to measure it; the same bounds hold for both. Without a
sampler for this Python the test is skipped with the reason (the ``profiles`` marker,
``tests/conftest.py``).

Bounds are looser than the benchmark's goals (``benchmarks/realapp.py``: 1 % foreign, 95 % / 90 %
held) so that a loaded machine stays green: there a preempted sampler mislabels 1-3 % of samples
(``benchmarks/fidelity.py --busy``). They are far tighter than what a missing feature gives, as
measured on main before the fixes (``benchmarks/README.md``): on uvloop the row decoders run
under another request's labels, so the CRUD endpoints' profiles are 14-44 % foreign and
``many_rows`` holds 50-62 % of its CPU; on the stdlib loop the decoders carry no span, so
``many_rows`` holds 44-58 %; FastAPI's telemetry puts ``GET``/``POST`` on 1-3 % of all samples and
leaves the session teardown unlabelled.

PostgreSQL comes from Debian's ``postgresql`` package (``scripts/install-postgres.sh``, run by
``scripts/test.sh``). If the private cluster cannot start, these tests fail saying why: they never
skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from span_profiles import _samplers
from span_profiles.receiver import Receiver
from tests.support import realapp as harness
from tests.support.apps import realapp as app
from tests.support.postgres import PostgresUnavailable, private_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.profiles,
    pytest.mark.sampled,
    pytest.mark.timeout(240),
]

SECONDS = 10.0
CLIENTS = 12


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A private PostgreSQL cluster with the app's schema and rows, for this module."""
    try:
        with private_cluster() as pg:
            url = pg.sqlalchemy_url()
            asyncio.run(app.prepare_database(url))
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is needed for the real-app test and could not start: {exc}")


def _telemetry(mode: str) -> str:
    if mode != "off" and not harness.fastapi_has_telemetry():
        pytest.skip("this FastAPI has no built-in telemetry (FastAPI 0.165+ on Python 3.11+)")
    return mode


@pytest.mark.parametrize("telemetry", ["off", "operations"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_each_endpoint_profile_holds_its_own_cpu_and_nothing_else(
    database_url: str, receiver: Receiver, tmp_path: Path, loop: str, telemetry: str
) -> None:
    """≤ 5 % foreign per profile, ≥ 90 % (many_rows) / 85 % held, no bare-method span_name."""
    sampler = _samplers.choose("auto").name
    assert sampler is not None  # the ``profiles`` marker skips where there is none
    config = harness.Config(loop, "spans", _telemetry(telemetry))
    result = harness.run(
        config,
        database_url,
        receiver,
        seconds=SECONDS,
        clients=CLIENTS,
        workdir=tmp_path,
        sampler=sampler,
    )
    judgement = result.judgement
    summary = {
        name: (
            stats.requests,
            stats.own,
            f"held {stats.held_share:.1%}",
            f"foreign {stats.foreign}/{stats.profile}",
        )
        for name, stats in judgement.endpoints.items()
    }
    # The run measured something: every endpoint answered, rows were decoded by the loop and the
    # decoders' frames were seen (the stack judge depends on them).
    assert not result.load.errors, result.load.errors
    assert all(stats.requests for stats in judgement.endpoints.values()), summary
    assert judgement.total, (
        f"the {result.sampler} sampler took no sample of the app; its output:\n"
        + result.log.read_text(errors="replace")[-3000:]
    )
    assert judgement.endpoints["many_rows"].own >= 100, (sampler, result.placement, summary)
    assert judgement.driver_total >= 20, judgement.kinds
    checks = harness.goals(
        judgement,
        foreign=0.05,
        foreign_min_profile=30,
        many_rows_held=0.90,
        held=0.85,
        held_min_own=30,
        allowance=2,
        bare=0,
    )
    missed = [f"{check.name}: {check.detail}" for check in checks if not check.ok]
    assert not missed, (
        f"{config.key} on the {sampler} sampler: {missed}; driver callbacks {dict(judgement.driver)}; per endpoint "
        f"(requests, own samples, held, foreign/profile) {summary}"
    )
