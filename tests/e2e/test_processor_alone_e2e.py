"""End to end: ``SpanProfilesProcessor()`` alone, set up as pyroscope-otel's README shows.

A child interpreter configures the real pyroscope-io agent, registers only our processor on a
provider and never calls ``instrument()``. Root spans run concurrently under asyncio and one hands
its work to a worker thread; the local receiver stores what the agent uploads.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from span_profiles.receiver import ProfileReader, Receiver, start_receiver_in_thread
from tests.support.servers import run_agent_script

pytestmark = [pytest.mark.agent, pytest.mark.e2e, pytest.mark.sampled]

# As in pyroscope-otel's README ("Pyroscope Configuration", then "Manual Instrumentation"), with
# our processor in place of PyroscopeSpanProcessor.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pyroscope import configure as pyroscope_configure

    pyroscope_configure(application_name="processor-alone", server_address=sys.argv[1],
                        sample_rate=100)

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from span_profiles import SpanProfilesProcessor

    provider = TracerProvider()
    provider.add_span_processor(SpanProfilesProcessor())
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer(__name__)

    def spin(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    async def burn_alpha():
        for _ in range(60):
            spin(0.006)
            await asyncio.sleep(0)

    async def burn_beta():
        for _ in range(60):
            spin(0.006)
            await asyncio.sleep(0)

    def burn_in_worker_thread():
        spin(0.4)

    async def request(name, burn):
        with tracer.start_as_current_span(name) as span:
            await burn()
            return format(span.get_span_context().span_id, "016x")

    async def threaded():
        with tracer.start_as_current_span("threaded") as span:
            await asyncio.to_thread(burn_in_worker_thread)
            return format(span.get_span_context().span_id, "016x")

    async def main():
        alpha, beta = await asyncio.gather(request("alpha", burn_alpha), request("beta", burn_beta))
        return {"alpha": alpha, "beta": beta, "threaded": await threaded()}

    ids = asyncio.run(main())
    provider.shutdown()
    import pyroscope
    pyroscope.shutdown()  # uploads the last, partial window
    print(json.dumps(ids))
    """
)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a free loopback port, storing into a fresh database."""
    started = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        yield started
    finally:
        started.stop()


def test_the_processor_alone_labels_asyncio_and_worker_thread_samples(receiver: Receiver) -> None:
    """Each root's samples carry its span_id (and span_name), also from a worker thread."""
    # The script configures the agent itself, as pyroscope-otel's README does.
    done = run_agent_script(SCRIPT, receiver.url)
    ids = json.loads(done.stdout.splitlines()[-1])
    burns = {
        "alpha": "burn_alpha",
        "beta": "burn_beta",
        "threaded": "burn_in_worker_thread",
    }
    by_span: dict[str, Counter[str]] = {name: Counter() for name in burns}
    unlabelled: Counter[str] = Counter()
    names = {span_id: name for name, span_id in ids.items()}
    with ProfileReader(receiver.db_path) as store:
        assert store.services() == ["processor-alone"]
        for sample in store.samples():
            burned = [burn for burn in burns.values() if burn in sample.functions]
            if not burned:
                continue
            span_ids = sample.label_values("span_id")
            assert len(span_ids) <= 1, sample.labels
            if not span_ids:
                unlabelled[burned[0]] += sample.count
                continue
            name = names.get(span_ids[0])
            assert name is not None, sample.labels
            assert sample.label_values("span_name") == (name,), sample.labels
            by_span[name][burned[0]] += sample.count
    for name, burn in burns.items():
        own = by_span[name][burn]
        elsewhere = sum(by_span[other][burn] for other in burns if other != name)
        # Labels switch at each task step; the sampler reads stack then labels ~0.1 ms apart,
        # so a few samples per run may land on the neighbour (benchmarks/fidelity.py).
        assert own >= 15, (name, by_span, unlabelled)
        assert elsewhere + unlabelled[burn] <= max(2, 0.2 * own), (name, by_span, unlabelled)
