"""A real process with the real agent: every kind of worker thread started by the pinned loop
thread runs on the process's full mask, while the loop and the agent's threads share one CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.agent, pytest.mark.e2e]

SCRIPT = """
import asyncio, concurrent.futures, json, os, sys, threading
import anyio.to_thread
from asgiref.sync import sync_to_async
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
import span_profiles
from span_profiles import _placement

def mask():
    return sorted(os.sched_getaffinity(0))

async def main():
    provider = TracerProvider(resource=Resource.create({"service.name": "threads"}))
    if sys.argv[1] == "instrumented":
        span_profiles.instrument(tracer_provider=provider)
    # Inside the running loop, like the adapters' lazy start: this thread is the loop thread.
    assert span_profiles.start_profiler(tracer_provider=provider, server_address="http://127.0.0.1:9")
    loop = asyncio.get_running_loop()
    seen = {"loop": mask()}
    seen["anyio.to_thread"] = await anyio.to_thread.run_sync(mask)
    seen["asyncio.to_thread"] = await asyncio.to_thread(mask)
    seen["run_in_executor default"] = await loop.run_in_executor(None, mask)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        seen["run_in_executor user pool"] = await loop.run_in_executor(pool, mask)
    seen["sync_to_async"] = await sync_to_async(mask, thread_sensitive=False)()
    seen["sync_to_async thread_sensitive"] = await sync_to_async(mask)()
    box = []
    thread = threading.Thread(target=lambda: box.append(mask()))
    thread.start(); thread.join()
    seen["threading.Thread"] = box[0]
    placement = _placement.current_placement()
    seen["placement"] = [placement.cpu, placement.loop_thread == threading.get_native_id()]
    seen["agent"] = [sorted(os.sched_getaffinity(t)) for t in placement.agent_threads]
    return seen

print(json.dumps(asyncio.run(main())))
span_profiles.stop_profiler()
"""


@pytest.mark.parametrize("mode", ["instrumented", "profiler-only"])
def test_worker_threads_of_a_pinned_loop_keep_every_cpu(mode: str) -> None:
    """anyio/asyncio to_thread, run_in_executor, asgiref and plain threads all see every CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("pinning needs two usable CPUs; this process may use one")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYROSCOPE_", "SPAN_PROFILES_"))
    }
    env["SPAN_PROFILES_SAMPLER"] = "pyroscope"  # placement is pyroscope-io's (3.14: auto is not)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    cpu, is_loop = seen.pop("placement")
    assert is_loop
    assert seen.pop("loop") == [cpu]
    agent = seen.pop("agent")
    assert agent
    assert all(mask == [cpu] for mask in agent)
    assert seen == {kind: cpus for kind in seen}
    assert len(seen) == 7
