"""CPU pinning: the agent's threads are born on one CPU; loop threads join it; stop undoes it."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from span_profiles import _profiler
from span_profiles._profiler import pin_current_thread, start_profiler, stop_profiler
from tests.profiler.conftest import FakeAgent

PROVIDER = TracerProvider(resource=Resource.create({"service.name": "svc"}))


def expected_cpu(cpus: list[int], index: int | None = None) -> int:
    """The CPU the profiler picks for this process."""
    return cpus[(os.getpid() if index is None else index) % len(cpus)]


def test_auto_pins_agent_threads_but_not_a_caller_outside_a_loop(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """'auto' outside an event loop: the agent's threads get one CPU, the caller keeps its mask."""
    assert start_profiler(tracer_provider=PROVIDER)
    assert fake_agent.thread_affinity == {expected_cpu(two_cpus)}
    assert os.sched_getaffinity(0) == set(two_cpus)
    assert _profiler.pinned_cpu() is None


def test_auto_pins_the_loop_thread_when_started_inside_a_loop(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """'auto' inside a running loop keeps the calling (loop) thread on the agent's CPU."""

    async def main() -> bool:
        return start_profiler(tracer_provider=PROVIDER, cpu_index=1)

    assert asyncio.run(main())
    assert os.sched_getaffinity(0) == {expected_cpu(two_cpus, 1)}
    assert fake_agent.thread_affinity == {expected_cpu(two_cpus, 1)}
    assert _profiler.pinned_cpu() == expected_cpu(two_cpus, 1)


def test_on_pins_the_caller_even_outside_a_loop(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """'on' pins the calling thread too: it is expected to run the loop later."""
    assert start_profiler(tracer_provider=PROVIDER, pin_cpu="on", cpu_index=0)
    assert os.sched_getaffinity(0) == {two_cpus[0]}


def test_off_pins_nothing(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """'off' leaves every thread, the agent's included, on all CPUs, even for pin_current_thread()."""

    async def main() -> bool:
        return start_profiler(tracer_provider=PROVIDER, pin_cpu="off")

    assert asyncio.run(main())
    assert fake_agent.thread_affinity == set(two_cpus)
    assert not pin_current_thread()
    assert os.sched_getaffinity(0) == set(two_cpus)


def test_pin_current_thread_joins_the_agent_cpu(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """A thread calling pin_current_thread() after the start is moved to the agent's CPU."""
    assert start_profiler(tracer_provider=PROVIDER, cpu_index=1)
    seen: list[object] = []

    def loop_thread() -> None:
        seen.append(pin_current_thread())
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join()
    assert seen == [True, {expected_cpu(two_cpus, 1)}]


def test_pin_request_before_start_is_applied_at_start(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """pin_current_thread() before start_profiler() is remembered and honoured at start."""
    assert not pin_current_thread()
    assert os.sched_getaffinity(0) == set(two_cpus)
    assert start_profiler(tracer_provider=PROVIDER, cpu_index=0)
    assert os.sched_getaffinity(0) == {two_cpus[0]}


def test_stop_restores_pinned_threads(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """stop_profiler() gives pinned loop threads their previous affinity back."""
    assert start_profiler(tracer_provider=PROVIDER, pin_cpu="on")
    assert len(os.sched_getaffinity(0)) == 1
    assert stop_profiler()
    assert os.sched_getaffinity(0) == set(two_cpus)


def test_one_allowed_cpu_pins_nothing(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """With a single usable CPU there is nothing to pin and pin_current_thread() says so."""
    os.sched_setaffinity(0, {two_cpus[1]})
    assert start_profiler(tracer_provider=PROVIDER, pin_cpu="on")
    assert _profiler.pinned_cpu() is None
    assert not pin_current_thread()


def test_refused_configure_restores_the_caller(fake_agent: FakeAgent, two_cpus: list[int]) -> None:
    """When the agent does not start, the caller's temporary pin is undone."""
    fake_agent.result = False
    assert not start_profiler(tracer_provider=PROVIDER, pin_cpu="on")
    assert os.sched_getaffinity(0) == set(two_cpus)


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_pin_setting_sources(
    fake_agent: FakeAgent, two_cpus: list[int], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """SPAN_PROFILES_PIN_CPU=off and pin_cpu='off' both switch pinning off."""
    options: dict[str, str] = {}
    if where == "argument":
        options["pin_cpu"] = "off"
    else:
        monkeypatch.setenv("SPAN_PROFILES_PIN_CPU", "off")
    assert start_profiler(tracer_provider=PROVIDER, **options)  # type: ignore[arg-type]
    assert fake_agent.thread_affinity == set(two_cpus)
