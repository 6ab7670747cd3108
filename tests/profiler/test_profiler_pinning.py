"""The profiler with placement, on real affinity: who is pinned, who keeps every CPU, undo."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from span_profiles import _placement, _profiler
from span_profiles._profiler import pin_current_thread, start_profiler, stop_profiler
from tests.support.profiler import FakeAgent

PROVIDER = TracerProvider(resource=Resource.create({"service.name": "svc"}))
ORIGINAL_BOOTSTRAP = threading.Thread.__dict__["_bootstrap_inner"]


def mask_of_new_thread() -> set[int]:
    """The affinity a thread started by the calling thread has when its target runs."""
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
    thread.start()
    thread.join()
    return seen[0]


def test_auto_outside_a_loop_pins_only_the_agent_threads(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """'auto' outside an event loop: the agent's threads get one CPU, the caller keeps its mask."""
    assert start_profiler(tracer_provider=PROVIDER)
    assert fake_agent.thread_affinity is not None
    assert len(fake_agent.thread_affinity) == 1
    assert os.sched_getaffinity(0) == set(two_cpus)
    assert _profiler.pinned_cpu() is None


def test_auto_inside_a_loop_pins_the_loop_thread_and_logs_it(
    fake_agent: FakeAgent, two_cpus: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """'auto' inside a running loop keeps the loop thread on the agent's CPU, said at INFO."""
    caplog.set_level(logging.INFO, logger="span_profiles")

    async def main() -> bool:
        return start_profiler(tracer_provider=PROVIDER, cpu_index=1)

    assert asyncio.run(main())
    assert os.sched_getaffinity(0) == {two_cpus[1]}
    assert fake_agent.thread_affinity == {two_cpus[1]}
    placement = _placement.current_placement()
    assert (placement.cpu, placement.loop_thread) == (two_cpus[1], threading.get_native_id())
    assert placement.reason == "worker number 1"
    lines = [r.getMessage() for r in caplog.records if "pinned event-loop thread" in r.getMessage()]
    assert len(lines) == 1
    assert f"to CPU {two_cpus[1]}" in lines[0]


def test_threads_started_by_the_pinned_loop_keep_every_cpu(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """A thread born on the pinned loop thread gets the process mask back; undo is exact."""
    assert start_profiler(tracer_provider=PROVIDER, pin_cpu="on", cpu_index=0)
    assert os.sched_getaffinity(0) == {two_cpus[0]}
    assert mask_of_new_thread() == set(two_cpus)
    assert stop_profiler()
    assert threading.Thread.__dict__["_bootstrap_inner"] is ORIGINAL_BOOTSTRAP


def test_a_thread_confined_by_the_user_stays_confined(
    fake_agent: FakeAgent, two_cpus: list[int]
) -> None:
    """Only threads born with the pin get the full mask: a user's own affinity is kept."""
    assert start_profiler(tracer_provider=PROVIDER, pin_cpu="on", cpu_index=0)
    seen: list[set[int]] = []

    def user_thread() -> None:
        os.sched_setaffinity(0, {two_cpus[1]})
        seen.append(mask_of_new_thread())

    thread = threading.Thread(target=user_thread)
    thread.start()
    thread.join()
    assert seen == [{two_cpus[1]}]


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
    assert _placement.current_placement().reason == "pin_cpu='off'"


def test_pin_current_thread_joins_and_a_second_loop_stays_free(
    fake_agent: FakeAgent, two_cpus: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """The first loop thread is pinned; a second one is refused (one sampler, one loop)."""
    caplog.set_level(logging.INFO, logger="span_profiles")
    assert start_profiler(tracer_provider=PROVIDER, cpu_index=1)
    seen: list[object] = []
    first_pinned = threading.Event()
    release = threading.Event()

    def first_loop() -> None:
        seen.append(pin_current_thread())
        seen.append(os.sched_getaffinity(0))
        first_pinned.set()
        release.wait(10)

    def second_loop() -> None:
        seen.append(pin_current_thread())
        seen.append(os.sched_getaffinity(0))

    first = threading.Thread(target=first_loop)
    first.start()
    assert first_pinned.wait(10)
    second = threading.Thread(target=second_loop)
    second.start()
    second.join()
    release.set()
    first.join()
    assert seen == [True, {two_cpus[1]}, False, set(two_cpus)]
    assert any("is not pinned" in r.getMessage() for r in caplog.records)


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
    assert _placement.current_placement().cpu is None


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
    options: dict[str, Any] = {}
    if where == "argument":
        options["pin_cpu"] = "off"
    else:
        monkeypatch.setenv("SPAN_PROFILES_PIN_CPU", "off")
    assert start_profiler(tracer_provider=PROVIDER, **options)
    assert fake_agent.thread_affinity == set(two_cpus)
