"""The real pyroscope-io agent in child processes: exit flush, fork handling, pinned threads."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from span_profiles.receiver import ProfileReader, Receiver, start_receiver_in_thread
from tests.support.servers import run_agent_script

pytestmark = [pytest.mark.agent, pytest.mark.e2e]


PRELUDE = """
import json, logging, os, sys, threading, time
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from span_profiles._profiler import (
    agent_thread_ids, pinned_cpu, profiler_running, start_profiler, stop_profiler,
)
URL = sys.argv[1]

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
"""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a free loopback port, storing into a fresh database."""
    started = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        yield started
    finally:
        started.stop()


def run(receiver: Receiver, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``PRELUDE + body`` in a fresh interpreter pointed at the receiver; fail on errors."""
    script = PRELUDE + textwrap.dedent(body)
    # The shared conftest switches the agent off for tests; these scripts opt in.
    done = run_agent_script(script, receiver.url, timeout=30)
    return done


def counts(receiver: Receiver) -> Counter[tuple[str, str]]:
    """Samples per (service, function) for the burn functions (names starting with ``burn``)."""
    result: Counter[tuple[str, str]] = Counter()
    with ProfileReader(receiver.db_path) as store:
        for sample in store.samples():
            for name in sample.functions:
                if name.startswith("burn"):
                    result[sample.service, name] += sample.count
    return result


def test_exit_uploads_the_partial_window(receiver: Receiver) -> None:
    """Samples of the last, unfinished upload window reach the server at interpreter exit."""
    run(
        receiver,
        """
        assert start_profiler(server_address=URL, application_name="exit-test",
                              upload_interval=60, pin_cpu="off")
        def burn_before_exit():
            spin(0.5)
        burn_before_exit()
        """,
    )
    assert counts(receiver)["exit-test", "burn_before_exit"] >= 20


@pytest.mark.sampled
def test_fork_child_starts_its_own_agent(receiver: Receiver) -> None:
    """After fork the child is not running; its own start works; the parent keeps profiling."""
    done = run(
        receiver,
        """
        assert start_profiler(server_address=URL, application_name="parent",
                              upload_interval=60, pin_cpu="on")
        parent_mask = os.sched_getaffinity(0)
        pid = os.fork()
        if pid == 0:
            state = {"running_after_fork": profiler_running(),
                     "child_mask": sorted(os.sched_getaffinity(0))}
            state["started"] = start_profiler(server_address=URL, application_name="child",
                                              upload_interval=60, pin_cpu="off")
            def burn_in_child():
                spin(0.4)
            burn_in_child()
            stop_profiler()
            print(json.dumps(state), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        def burn_in_parent():
            spin(0.4)
        burn_in_parent()
        print(json.dumps({"parent_mask": sorted(parent_mask), "all": sorted(os.sched_getaffinity(0) | parent_mask)}))
        """,
    )
    child, parent = (json.loads(line) for line in done.stdout.splitlines())
    assert child["running_after_fork"] is False
    assert child["started"] is True
    if len(parent["all"]) > 1 and len(parent["parent_mask"]) == 1:
        # The child's only thread inherited the parent's pin; it gets the whole mask back.
        assert len(child["child_mask"]) > 1
    assert "forked while its profiler runs" in done.stderr
    seen = counts(receiver)
    assert seen["child", "burn_in_child"] >= 15, done.stderr
    assert seen["parent", "burn_in_parent"] >= 15
    assert seen["parent", "burn_in_child"] == 0


def test_real_agent_threads_share_the_pinned_cpu(receiver: Receiver) -> None:
    """Every native thread of the real agent, including late ones, runs on the pinned CPU."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable CPUs")
    done = run(
        receiver,
        """
        import asyncio
        async def main():
            return start_profiler(server_address=URL, application_name="pin-test",
                                  upload_interval=1)
        assert asyncio.run(main())
        def burn_while_pinned():
            spin(1.5)  # one upload happens meanwhile: its threads exist by now
        burn_while_pinned()
        python_threads = {t.native_id for t in threading.enumerate()}
        native = [int(t) for t in os.listdir("/proc/self/task") if int(t) not in python_threads]
        print(json.dumps({
            "cpu": pinned_cpu(),
            "found_at_start": sorted(agent_thread_ids()),
            "masks": {t: sorted(os.sched_getaffinity(t)) for t in native},
            "main": sorted(os.sched_getaffinity(0)),
        }))
        """,
    )
    state = json.loads(done.stdout)
    assert state["cpu"] is not None
    assert state["found_at_start"]
    assert state["masks"]
    assert all(mask == [state["cpu"]] for mask in state["masks"].values()), state
    assert state["main"] == [state["cpu"]]


def test_the_real_samplers_threads_get_the_first_claim_on_the_pinned_cpu(
    receiver: Receiver,
) -> None:
    """Next to the pinned loop, the agent's two sampling threads run at SCHED_FIFO where the
    process may raise them (root here); the loop and the other threads keep the default."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable CPUs")
    done = run(
        receiver,
        """
        import asyncio
        from span_profiles import current_placement
        async def main():
            assert start_profiler(server_address=URL, application_name="priority-test")
            for _ in range(50):  # the sampling threads are found within about a second
                await asyncio.sleep(0.1)
                placement = current_placement()
                if placement.sampler_priority is not None:
                    break
            fifo = [int(t) for t in os.listdir("/proc/self/task")
                    if os.sched_getscheduler(int(t)) & 0xff == os.SCHED_FIFO]
            print(json.dumps({"priority": placement.sampler_priority, "fifo": fifo,
                              "python": [t.native_id for t in threading.enumerate()]}))
        asyncio.run(main())
        """,
    )
    state = json.loads(done.stdout)
    if os.geteuid() != 0:
        assert state["priority"] in (None, "nice -10"), state
        return
    assert state["priority"] == "SCHED_FIFO 1", state
    # The agent's two sampling threads: native threads, never the loop or another Python thread.
    assert len(state["fifo"]) == 2, state
    assert not set(state["fifo"]) & set(state["python"]), state


def test_native_work_that_releases_the_gil_is_in_the_span(receiver: Receiver) -> None:
    """With gil_only=False, hashlib.scrypt in a worker thread lands in its span."""
    done = run(
        receiver,
        """
        import concurrent.futures, hashlib
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        import span_profiles
        provider = TracerProvider(resource=Resource.create({"service.name": "native"}))
        span_profiles.instrument(tracer_provider=provider)
        assert start_profiler(tracer_provider=provider, server_address=URL, upload_interval=60,
                              pin_cpu="off", gil_only=False)
        def burn_scrypt_login():
            hashlib.scrypt(b"pw", salt=b"salt" * 4, n=2**14, r=8, p=1, maxmem=64 << 20)
        with provider.get_tracer("t").start_as_current_span("POST /login") as span:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                end = time.monotonic() + 1.5
                while time.monotonic() < end:
                    pool.submit(burn_scrypt_login).result()
        print(format(span.get_span_context().span_id, "016x"))
        """,
    )
    span_id = done.stdout.split()[-1]
    in_span = other = 0
    with ProfileReader(receiver.db_path) as store:
        for sample in store.samples():
            if "burn_scrypt_login" in sample.functions:
                if span_id in sample.label_values("span_id"):
                    in_span += sample.count
                else:
                    other += sample.count
    assert in_span >= 50, (in_span, other)
    assert other <= in_span * 0.05, (in_span, other)
