"""Placement decided on fake /proc readings and fake affinity calls: deterministic, no real pins."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator, Mapping

import pytest

from span_profiles import _placement
from span_profiles._core.patching import Patches
from span_profiles._placement import Policy
from tests.support.placement import reset_placement

LOOP, SAMPLER, UPLOADER, LATE_SAMPLER, PYTHON_WORKER = 100, 201, 202, 203, 300
ALL = frozenset({0, 1, 2, 3})


class FakeSystem:
    """A process with threads, masks, run-queue waits and per-CPU busy time, all set by the test."""

    def __init__(self) -> None:
        self.caller = LOOP
        self.masks: dict[int, frozenset[int]] = {LOOP: ALL}
        self.python: set[int] = {LOOP}
        self.sched: dict[int, tuple[int, int]] = {LOOP: (0, 0)}
        self.cpu_of: dict[int, int] = {LOOP: 2}
        self.busy: dict[int, tuple[int, int]] = {cpu: (0, 0) for cpu in ALL}
        self.clock = 0.0
        self.set_calls: list[tuple[int, frozenset[int]]] = []
        self.contention: dict[int, float] = {cpu: 0.0 for cpu in ALL}
        """What a probe on each CPU measures (wait per run time)."""
        self.probed: list[int] = []
        self.priorities: dict[int, str] = {}

    def _tid(self, tid: int) -> int:
        return self.caller if tid == 0 else tid

    def get_affinity(self, tid: int) -> frozenset[int]:
        return self.masks[self._tid(tid)]

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> bool:
        tid = self._tid(tid)
        if tid not in self.masks:
            return False
        self.set_calls.append((tid, cpus))
        self.masks[tid] = frozenset(cpus)
        return True

    def tasks(self) -> frozenset[int]:
        return frozenset(self.masks)

    def schedstat(self, tid: int) -> tuple[int, int] | None:
        return self.sched.get(tid)

    def last_cpu(self, tid: int) -> int | None:
        return self.cpu_of.get(self._tid(tid))

    def cpu_times(self) -> Mapping[int, tuple[int, int]]:
        return dict(self.busy)

    def python_threads(self) -> frozenset[int]:
        return frozenset(self.python & set(self.masks))

    def probe(self, cpu: int) -> float | None:
        self.probed.append(cpu)
        return self.contention[cpu]

    def now(self) -> float:
        return self.clock

    priority_allowed: str | None = "SCHED_FIFO 1"
    """What raise_priority grants (``None``: refused, as without CAP_SYS_NICE)."""

    def raise_priority(self, tid: int) -> str | None:
        if self.priority_allowed is not None:
            self.priorities[tid] = self.priority_allowed
        return self.priority_allowed

    def reset_priority(self, tid: int) -> None:
        self.priorities.pop(tid, None)

    def start_native(self, tid: int) -> None:
        """A native thread created by the caller: it inherits the caller's mask."""
        self.masks[tid] = self.masks[self.caller]

    def second(self, *, loop_waits: float, busy: Mapping[int, float]) -> None:
        """One second passes: the loop ran, waited ``loop_waits`` of it; CPUs were ``busy``."""
        self.clock += 1.0
        run, wait = self.sched[LOOP]
        self.sched[LOOP] = (run + int(0.5e9), wait + int(loop_waits * 1e9))
        for cpu, share in busy.items():
            done, total = self.busy[cpu]
            self.busy[cpu] = (done + int(share * 100), total + 100)


class NoHesitation(random.Random):
    """An rng that never makes a worker wait its turn."""

    def random(self) -> float:
        return 0.99


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystem]:
    """Placement on a :class:`FakeSystem`, with no monitor thread (the test calls ``tick``)."""
    system = FakeSystem()
    reset_placement()
    monkeypatch.setattr(_placement, "_system", system)
    monkeypatch.setattr(_placement, "supported", lambda: True)
    monkeypatch.setattr(_placement, "_start_monitor", lambda state: None)
    monkeypatch.setattr(threading, "get_native_id", lambda: system.caller)
    _placement._state.policy = Policy(rng=NoHesitation())
    yield system
    _placement.release()
    monkeypatch.undo()
    reset_placement()


def start_agent(fake: FakeSystem, *, index: int | None = None, in_loop: bool = True) -> int:
    """What the profiler does: choose, configure with the caller pinned, activate."""
    cpu = _placement.agent_cpu("auto", index)
    assert cpu is not None
    with _placement.born_on(cpu):
        fake.start_native(SAMPLER)
        fake.start_native(UPLOADER)
    _placement.activate(frozenset({SAMPLER, UPLOADER}), caller_is_loop=in_loop)
    return cpu


def test_first_cpu_spreads_worker_numbers_and_otherwise_follows_the_loop() -> None:
    """Worker numbers spread over the allowed CPUs; without one, the loop's own CPU; never the pid."""
    policy = Policy()
    allowed = [2, 5, 7]
    assert [policy.first_cpu(allowed, 5, i)[0] for i in range(4)] == [2, 5, 7, 2]
    assert policy.first_cpu(allowed, 7, None) == (7, "the CPU the loop thread ran on")
    assert policy.first_cpu(allowed, 3, None)[0] == 2  # outside the mask: not used


def test_start_pins_the_loop_and_agent_threads_to_the_loops_cpu(fake: FakeSystem) -> None:
    """Started in the loop on CPU 2: loop, sampler and uploader on {2}; placement says so."""
    assert start_agent(fake) == 2
    assert fake.masks[LOOP] == fake.masks[SAMPLER] == fake.masks[UPLOADER] == {2}
    placement = _placement.current_placement()
    assert placement.cpu == 2
    assert placement.loop_thread == LOOP
    assert placement.agent_threads == (SAMPLER, UPLOADER)
    assert placement.allowed == (0, 1, 2, 3)


def test_outside_a_loop_the_caller_is_restored_and_the_loop_joins_the_agent(
    fake: FakeSystem,
) -> None:
    """The agent starts on a non-loop thread; the loop thread, announced later, joins its CPU;
    an agent thread born meanwhile on an older pin is gathered by the next tick."""
    start_agent(fake, in_loop=False)
    assert fake.masks[LOOP] == ALL
    assert _placement.current_placement().cpu is None
    loop_thread = 150
    fake.masks[loop_thread] = ALL
    fake.python.add(loop_thread)
    fake.cpu_of[loop_thread] = 3
    fake.caller = loop_thread
    assert _placement.pin_current_thread()
    assert fake.masks[loop_thread] == fake.masks[SAMPLER] == fake.masks[UPLOADER] == {2}
    fake.sched[loop_thread] = (0, 0)
    _placement._state.pinned_to.add(0)  # as after a move from CPU 0
    fake.masks[LATE_SAMPLER] = frozenset({0})
    assert _placement.tick()
    assert fake.masks[LATE_SAMPLER] == {2}


def test_contention_moves_loop_and_sampler_together_within_seconds(
    fake: FakeSystem, caplog: pytest.LogCaptureFixture
) -> None:
    """A hog on the loop's CPU: after `patience` contended seconds both move to the idle CPU."""
    caplog.set_level(logging.INFO, logger="span_profiles")
    start_agent(fake)
    fake.start_native(LATE_SAMPLER)  # born from an agent thread after configure(): pinned too
    fake.masks[LATE_SAMPLER] = frozenset({2})
    busy = {0: 0.9, 1: 0.05, 2: 1.0, 3: 0.7}
    fake.contention.update({2: 2.0, 1: 0.1, 3: 0.5})
    assert _placement.tick()  # first reading
    fake.second(loop_waits=0.45, busy=busy)
    assert _placement.tick()
    assert fake.masks[LOOP] == {2}
    assert fake.probed == []
    fake.second(loop_waits=0.45, busy=busy)
    assert _placement.tick()
    assert fake.probed == [2, 1, 3]  # its own, then the two least busy CPUs by /proc/stat
    assert fake.masks[LOOP] == fake.masks[SAMPLER] == fake.masks[LATE_SAMPLER] == {1}
    assert fake.masks[UPLOADER] == {1}
    placement = _placement.current_placement()
    assert (placement.cpu, placement.moves) == (1, 1)
    moved = [r.getMessage() for r in caplog.records if "moved event-loop thread" in r.getMessage()]
    assert len(moved) == 1
    assert "from CPU 2 to CPU 1" in moved[0]
    assert "waited for CPU 2 45%" in moved[0]


def test_no_move_without_waiting_or_without_a_clearly_better_cpu(fake: FakeSystem) -> None:
    """A busy loop that does not wait stays, unprobed; a contended one stays when probes find
    every other CPU as contended, even if /proc/stat calls one idle (other tenants' load)."""
    start_agent(fake)
    _placement.tick()
    for _ in range(5):
        fake.second(loop_waits=0.01, busy={0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0})
        _placement.tick()
    assert fake.masks[LOOP] == {2}
    assert fake.probed == []
    fake.contention.update({0: 1.2, 1: 0.9, 2: 1.5, 3: 0.8})
    for _ in range(6):
        fake.second(loop_waits=0.5, busy={0: 0.0, 1: 0.95, 2: 1.0, 3: 0.85})
        _placement.tick()
    # Probed once after two contended seconds; then it backs off (probes cost CPU).
    assert fake.probed == [2, 0, 3]
    assert fake.masks[LOOP] == {2}
    assert _placement.current_placement().moves == 0


def test_workers_contending_for_one_cpu_take_turns(fake: FakeSystem) -> None:
    """With the tie-break drawn, a contended worker waits one more second, then moves."""
    start_agent(fake)
    hesitant = Policy(rng=type("Low", (random.Random,), {"random": lambda self: 0.1})())
    _placement._state.policy = hesitant
    fake.contention[2] = 2.0
    _placement.tick()
    busy = {0: 0.1, 1: 0.1, 2: 1.0, 3: 0.1}
    for expected in ({2}, {2}, {0}):
        fake.second(loop_waits=0.5, busy=busy)
        _placement.tick()
        assert fake.masks[LOOP] == expected


def test_new_python_threads_of_the_pinned_loop_get_the_process_mask(fake: FakeSystem) -> None:
    """The thread-start wrapper: a thread born with the pin gets the full mask, others are kept."""
    original = threading.Thread.__dict__["_bootstrap_inner"]
    start_agent(fake)
    assert threading.Thread.__dict__["_bootstrap_inner"] is _placement._wrapper
    ran: list[frozenset[int]] = []
    bootstrap = _placement._make_wrapper(lambda self: ran.append(fake.masks[PYTHON_WORKER]))
    fake.caller = PYTHON_WORKER
    fake.masks[PYTHON_WORKER] = frozenset({2})  # inherited the loop's pin
    bootstrap(threading.Thread())
    fake.masks[PYTHON_WORKER] = frozenset({1})  # confined by the user: kept
    bootstrap(threading.Thread())
    assert ran == [ALL, {1}]
    fake.caller = LOOP
    _placement.release()
    assert threading.Thread.__dict__["_bootstrap_inner"] is original
    fake.caller = PYTHON_WORKER
    fake.masks[PYTHON_WORKER] = frozenset({2})
    bootstrap(threading.Thread())  # no pin active: the wrapper does nothing
    assert ran[-1] == {2}


def test_wrapper_stacks_with_another_hook_in_either_order(fake: FakeSystem) -> None:
    """Under or over a Patches-based hook (the labels' thread hook), every undo is exact."""
    original = threading.Thread.__dict__["_bootstrap_inner"]

    def other(inner: object) -> object:
        def hooked(self: threading.Thread) -> None:
            inner(self)  # type: ignore[operator]

        hooked.__wrapped__ = inner  # type: ignore[attr-defined]
        return hooked

    # Theirs first, ours on top: ours comes off first, then theirs.
    patches = Patches()
    patches.set(threading.Thread, "_bootstrap_inner", other(original))
    start_agent(fake)
    _placement.release()
    assert getattr(threading.Thread.__dict__["_bootstrap_inner"], "__wrapped__", None) is original
    patches.undo()
    assert threading.Thread.__dict__["_bootstrap_inner"] is original

    # Ours first, theirs on top: ours stays in the chain, inert, until theirs is undone.
    start_agent(fake)
    patches.set(threading.Thread, "_bootstrap_inner", other(threading.Thread._bootstrap_inner))  # type: ignore[attr-defined]
    _placement.release()
    assert _placement._restore is None
    patches.undo()
    assert threading.Thread.__dict__["_bootstrap_inner"] is _placement._wrapper
    start_agent(fake)  # a new pin reuses the wrapper still in place
    assert threading.Thread.__dict__["_bootstrap_inner"] is _placement._wrapper
    _placement.release()
    assert threading.Thread.__dict__["_bootstrap_inner"] is original


def test_wrapper_dropped_by_another_hooks_undo_is_put_back(fake: FakeSystem) -> None:
    """If an older hook's undo removes our wrapper while a pin is active, the next tick restores it."""
    original = threading.Thread.__dict__["_bootstrap_inner"]
    start_agent(fake)
    threading.Thread._bootstrap_inner = original  # type: ignore[attr-defined]
    assert _placement.tick()
    assert threading.Thread.__dict__["_bootstrap_inner"] is _placement._wrapper


def test_a_second_loop_is_not_pinned_until_the_first_exits(fake: FakeSystem) -> None:
    """One sampler, one loop: the second loop thread stays free; when the first exits it may pin."""
    start_agent(fake)
    second = 160
    fake.masks[second] = ALL
    fake.python.add(second)
    fake.cpu_of[second] = 0
    fake.caller = second
    assert not _placement.pin_current_thread()
    assert fake.masks[second] == ALL
    del fake.masks[LOOP], fake.sched[LOOP]  # the first loop thread exits
    fake.caller = LOOP
    assert not _placement.tick()
    assert fake.masks[SAMPLER] == ALL
    fake.caller = second
    assert _placement.pin_current_thread()
    assert fake.masks[second] == fake.masks[SAMPLER] == {2}


def test_fork_child_of_the_pinned_loop_gets_its_mask_back(fake: FakeSystem) -> None:
    """The forked child's only thread inherited the pin: it is restored and nothing is active."""
    start_agent(fake)
    _placement._before_fork()
    _placement._after_fork_in_child()
    assert fake.masks[LOOP] == ALL
    assert _placement.current_placement().cpu is None
    assert not _placement._state.active


def test_fork_from_another_thread_leaves_the_child_alone(fake: FakeSystem) -> None:
    """A fork from a thread that is not the pinned loop changes no mask in the child."""
    start_agent(fake)
    other = 170
    fake.masks[other] = frozenset({1})
    fake.caller = other
    _placement._before_fork()
    calls = len(fake.set_calls)
    _placement._after_fork_in_child()
    assert len(fake.set_calls) == calls


def test_single_cpu_and_off_pin_nothing(fake: FakeSystem) -> None:
    """One allowed CPU or pin_cpu='off': no CPU is chosen, with the reason recorded."""
    fake.masks[LOOP] = frozenset({3})
    assert _placement.agent_cpu("auto", None) is None
    assert "one CPU" in _placement.current_placement().reason
    fake.masks[LOOP] = ALL
    assert _placement.agent_cpu("off", None) is None
    assert _placement.current_placement().reason == "pin_cpu='off'"


def test_sampling_threads_next_to_the_pinned_loop_get_the_first_claim_on_their_cpu(
    fake: FakeSystem,
) -> None:
    """Found after the pin: raised at once; the pin released: back to the default."""
    start_agent(fake)
    _placement.sampling_threads_found((SAMPLER, LATE_SAMPLER))
    assert fake.priorities == {SAMPLER: "SCHED_FIFO 1", LATE_SAMPLER: "SCHED_FIFO 1"}
    assert _placement.current_placement().sampler_priority == "SCHED_FIFO 1"
    _placement.release()
    assert fake.priorities == {}
    assert _placement.current_placement().sampler_priority is None


def test_sampling_threads_found_before_the_loop_is_pinned_wait_for_it(fake: FakeSystem) -> None:
    """No loop next to them yet: nothing raised until a loop thread joins their CPU."""
    start_agent(fake, in_loop=False)
    _placement.sampling_threads_found((SAMPLER,))
    assert fake.priorities == {}
    assert _placement.pin_current_thread()
    assert fake.priorities == {SAMPLER: "SCHED_FIFO 1"}


def test_a_refused_priority_is_said_once_and_changes_nothing(
    fake: FakeSystem, caplog: pytest.LogCaptureFixture
) -> None:
    """Without CAP_SYS_NICE: one INFO line, no thread half raised, placement says None."""
    fake.priority_allowed = None
    start_agent(fake)
    with caplog.at_level(logging.INFO, logger="span_profiles"):
        _placement.sampling_threads_found((SAMPLER, LATE_SAMPLER))
        _placement.sampling_threads_found((SAMPLER, LATE_SAMPLER))
    assert fake.priorities == {}
    assert _placement.current_placement().sampler_priority is None
    assert sum("CAP_SYS_NICE" in r.getMessage() for r in caplog.records) == 1
