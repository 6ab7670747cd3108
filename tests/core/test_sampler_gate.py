"""The sampler gate on scripted CPU clocks: when a worker-thread label switch may go ahead."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from span_profiles._core import guard, sampler_gate

SAMPLER = sampler_gate.clock_of(101)
LABELLER = sampler_gate.clock_of(102)


class Clocks:
    """CPU clocks that follow a script: each read of a clock returns its next scripted value."""

    def __init__(self, **scripts: list[int]) -> None:
        self.scripts = {
            sampler_gate.clock_of(int(name[1:])): list(v) for name, v in scripts.items()
        }
        self.reads = 0

    def __call__(self, clock: int) -> int:
        self.reads += 1
        script = self.scripts[clock]
        return script.pop(0) if len(script) > 1 else script[0]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The gate watching the scripted sampler (t101) and labeller (t102), settled at 0 and 0."""
    monkeypatch.setattr(sampler_gate, "_clocks", (SAMPLER, LABELLER))
    monkeypatch.setattr(sampler_gate, "_settled", (0, 0))
    monkeypatch.setattr(sampler_gate, "_now", lambda: 0)  # never past the bound
    yield
    sampler_gate.unwatch()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux per-thread CPU clocks")
def test_clock_ids_are_the_kernels_per_thread_cpu_clocks() -> None:
    """``clock_of(tid)`` is the CPU clock of thread ``tid``: this thread's reads bracket it."""
    own = sampler_gate.clock_of(threading.get_native_id())
    for _ in range(100):
        before = time.thread_time_ns()
        read = time.clock_gettime_ns(own)
        after = time.thread_time_ns()
        assert before <= read <= after


@pytest.mark.usefixtures("gate")
def test_nothing_running_since_the_last_switch_goes_ahead_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(t101=[0], t102=[0])
    monkeypatch.setattr(sampler_gate, "_clock", clocks)
    sampler_gate.wait()
    assert clocks.reads == 4  # two reads of each clock, once


@pytest.mark.usefixtures("gate")
def test_a_running_sampler_is_waited_for_then_its_labeller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampler runs (clock moves), stops, and the labeller has not run yet: still wait."""
    clocks = Clocks(
        # round 1: sampler moves (running); round 2: stopped but labeller not run since;
        # round 3: labeller running; round 4: both still, labeller moved since: go.
        t101=[10, 20, 30, 30, 30, 30, 30],
        t102=[0, 0, 0, 0, 5, 9, 9],
    )
    monkeypatch.setattr(sampler_gate, "_clock", clocks)
    sampler_gate.wait()
    assert clocks.scripts[SAMPLER] == [30]
    assert clocks.scripts[LABELLER] == [9]
    assert sampler_gate._settled == (30, 9)


@pytest.mark.usefixtures("gate")
def test_a_sample_handed_over_before_the_first_look_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sampler ran since the last switch and stopped; its labeller has not run: wait."""
    clocks = Clocks(t101=[50], t102=[0, 0, 0, 0, 3, 7, 7, 7])
    monkeypatch.setattr(sampler_gate, "_clock", clocks)
    sampler_gate.wait()
    assert clocks.reads == 16  # four rounds: handed over, still handed over, labelling, done
    assert sampler_gate._settled == (50, 7)


@pytest.mark.usefixtures("gate")
def test_the_wait_is_bounded_and_yields_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sampler that never stops (or a wrong thread) delays a switch by MAX_WAIT_NS at most,
    and the waiting thread yields its CPU (the agent's threads may need it) on every round."""
    counter = iter(range(10**9))
    monkeypatch.setattr(sampler_gate, "_clock", lambda clock: next(counter))
    step = 100_000
    now = iter(range(0, 10**12, step))
    monkeypatch.setattr(sampler_gate, "_now", lambda: next(now))
    yields: list[None] = []
    monkeypatch.setattr(sampler_gate, "_yield", lambda: yields.append(None) or 0)
    sampler_gate.wait()
    looks = next(now) // step  # times the clock was looked at: 0, 1 step, ... up to the bound
    assert looks == sampler_gate.MAX_WAIT_NS // step + 1
    assert len(yields) == looks - 1  # every round but the one that reached the bound


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_the_yield_keeps_the_gil() -> None:
    """The yield is libc's sched_yield through ctypes.PyDLL: called with the GIL held."""
    import ctypes

    function = sampler_gate._gil_holding_yield()
    assert function() == 0
    flags = getattr(function, "_flags_", 0)
    assert flags & getattr(ctypes, "_FUNCFLAG_PYTHONAPI")  # noqa: B009 (private, untyped)


def test_no_watched_threads_means_no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler_gate.unwatch()

    def fail(clock: int) -> int:
        raise AssertionError("read a clock")

    monkeypatch.setattr(sampler_gate, "_clock", fail)
    sampler_gate.wait()


@pytest.mark.usefixtures("gate")
def test_a_failing_clock_switches_the_gate_off_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(clock: int) -> int:
        raise OSError("no such clock")

    monkeypatch.setattr(sampler_gate, "_clock", broken)
    monkeypatch.setattr(guard, "_failed", set())
    sampler_gate.wait()
    assert sampler_gate.watched() == ()
    sampler_gate.wait()  # off: no read, no second log line
    assert len([r for r in caplog.records if "sampler" in r.getMessage()]) == 1


def test_the_search_keeps_the_two_threads_that_run_every_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of the agent's threads, the two that ran in most rounds, the busier one (sampler) first."""
    used = {201: 0, 202: 0, 203: 0, 204: 0}
    rounds = iter(range(10**6))

    def clock(clock_id: int) -> int:
        tid = ~(clock_id >> 3)
        step = next(rounds)
        # t201: idle; t202: labeller (runs each round, a little); t203: sampler (each round, a
        # lot); t204: an HTTP client that ran once.
        used[tid] += {201: 0, 202: 5, 203: 50, 204: 1000 if step == 7 else 0}[tid]
        return used[tid]

    monkeypatch.setattr(sampler_gate, "_clock", clock)
    monkeypatch.setattr(sampler_gate, "_ROUND_S", 0)
    busy = sampler_gate._busy_threads(lambda: [201, 202, 203, 204])
    assert busy == [sampler_gate.clock_of(203), sampler_gate.clock_of(202)]
