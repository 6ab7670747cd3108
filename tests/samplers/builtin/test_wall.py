"""The built-in sampler's wall reads, on stand-in reads of a process (any Python).

``get_all_awaited_by()`` and thread stacks are given as the shapes CPython 3.14 returns; tasks
and threads get their labels through the same identity events as the CPU samples.
"""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from span_profiles._samplers.builtin import ring, stacks
from span_profiles._samplers.builtin.attribution import Attributor
from span_profiles._samplers.builtin.ring import Event
from span_profiles._samplers.builtin.wall import AFTER_LAST_WAIT, BUDGET, NOT_READ, WallReader
from span_profiles.receiver.ingest.decode import decode_pprof
from tests.support.attribution import attributor as _attributor

LOOP, WORKER = 100, 200
PARENT, CHILD, OTHER, LONELY = 0x7F01, 0x7F02, 0x7F03, 0x7F04
MS = 1_000_000


def frame(name: str) -> Any:
    return SimpleNamespace(filename="app.py", lineno=1, funcname=name)


def task(task_id: int, chain: list[str], awaited_by: tuple[tuple[int, list[str]], ...] = ()) -> Any:
    return SimpleNamespace(
        task_id=task_id,
        task_name=f"Task-{task_id}",
        coroutine_stack=[SimpleNamespace(call_stack=[frame(n) for n in chain])],
        awaited_by=[
            SimpleNamespace(call_stack=[frame(n) for n in above], task_name=tid)
            for tid, above in awaited_by
        ],
    )


class FakeReader:
    """What :class:`WallReader` uses of :class:`~.stacks.StackReader`."""

    def __init__(self, tasks: list[Any], threads: dict[int, list[str]], cost: float = 0) -> None:
        self.loop_threads = {LOOP}
        self.cost = cost
        self.tasks = tasks
        self.threads = threads
        self._all = self

    def get_all_awaited_by(self) -> list[Any]:
        if self.cost:
            time.sleep(self.cost)
        return [SimpleNamespace(thread_id=LOOP, awaited_by=self.tasks)]

    def _read_threads(self, tids: list[int]) -> dict[int, stacks.Stack]:
        return {t: tuple(frame(n) for n in self.threads[t]) for t in tids if t in self.threads}


def _reader(reader: FakeReader, attributor: Attributor) -> WallReader:
    return WallReader(
        reader,  # type: ignore[arg-type]
        attributor,
        10 * MS,
        lambda at: 0,
        lambda stack: [("app.py", f.funcname, 0) for f in stack],
    )


def _samples(wall: WallReader) -> dict[str, Counter[tuple[str, ...]]]:
    """span_id -> stack (names, leaf first) -> ns, from every window, as the receiver reads it."""
    found: dict[str, Counter[tuple[str, ...]]] = {}
    for builder in wall.take(1 << 30):
        profile = decode_pprof(builder.encode(0, 1))
        assert profile.sample_types == (("wall", "nanoseconds"),)
        assert profile.period_type == ("wall", "nanoseconds")
        assert profile.period == 10 * MS
        for sample in profile.samples:
            span_id = dict(sample.labels)["span_id"]
            found.setdefault(span_id, Counter())[sample.functions] += sample.values[0]
    return found


def test_a_child_awaited_by_its_parent_is_where_the_time_goes_under_the_parent() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, PARENT, 1),
        Event(ring.TASK, 12, CHILD, 1),
        Event(ring.TASK, 12, OTHER, 0),  # a task of no request
    )
    tasks = [
        task(PARENT, ["handler"]),
        task(CHILD, ["sleep", "child"], awaited_by=((PARENT, ["handler"]),)),
        task(OTHER, ["sleep", "idle"]),
    ]
    wall = _reader(FakeReader(tasks, {}), attributor)
    wall.read(time.monotonic_ns())
    wall.finish(time.monotonic_ns())
    found = _samples(wall)
    assert set(found) == {"000000000000000a"}
    assert set(found["000000000000000a"]) == {("sleep", "child", "handler")}


def test_concurrent_children_share_and_requests_stay_apart() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, PARENT, 1),
        Event(ring.TASK, 11, CHILD, 1),
        Event(ring.TASK, 11, OTHER, 1),
        Event(ring.TASK, 11, LONELY, 2),
    )
    tasks = [
        task(PARENT, ["gathering"]),
        task(CHILD, ["sleep", "c1"], awaited_by=((PARENT, ["gathering"]),)),
        task(OTHER, ["sleep", "c2"], awaited_by=((PARENT, ["gathering"]),)),
        task(LONELY, ["acquire", "b"]),
    ]
    wall = _reader(FakeReader(tasks, {}), attributor)
    wall.read(time.monotonic_ns())
    wall.finish(time.monotonic_ns())
    found = _samples(wall)
    a, b = found["000000000000000a"], found["000000000000000b"]
    assert set(a) == {("sleep", "c1", "gathering"), ("sleep", "c2", "gathering")}
    # Equal shares: each of the two intervals (read, finish) gives its odd nanosecond to one.
    assert abs(a[("sleep", "c1", "gathering")] - a[("sleep", "c2", "gathering")]) <= 2
    assert set(b) == {("acquire", "b")}


def test_a_request_job_thread_is_what_its_task_waits_for() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, PARENT, 1),
        Event(ring.THREAD, 20, WORKER, 1),
        Event(ring.THREAD, 20, LOOP, 1),  # the loop thread outside a task: never a job thread
    )
    tasks = [task(PARENT, ["run_sync", "endpoint"])]
    threads = {WORKER: ["sleep_part", "run"], LOOP: ["select", "run_forever"]}
    wall = _reader(FakeReader(tasks, threads), attributor)
    wall.read(time.monotonic_ns())
    wall.finish(time.monotonic_ns())
    found = _samples(wall)["000000000000000a"]
    assert set(found) == {("sleep_part", "run", "run_sync", "endpoint")}


def test_on_cpu_samples_are_one_tick_each_and_taken_from_the_waits() -> None:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    wall = _reader(FakeReader([task(PARENT, ["sleep", "handler"])], {}), attributor)
    began = time.monotonic_ns()
    cpu = stacks.Sample(LOOP, PARENT, (frame("burn"), frame("handler")), began, began + 1)
    wall.on_cpu([cpu], began)
    wall.read(began + 100 * MS)
    found = _samples(wall)["000000000000000a"]
    assert found[("burn", "handler")] == 10 * MS
    # The request started at its first event (t=10 ns): the rest of its time is waiting.
    assert found[("sleep", "handler")] > 0


def test_an_ended_request_is_closed_at_its_end() -> None:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    wall = _reader(FakeReader([task(PARENT, ["sleep", "handler"])], {}), attributor)
    now = time.monotonic_ns()
    wall.read(now)
    assert len(wall.account) == 1
    attributor.add(Event(ring.END, now + 5 * MS, 1, 0))
    wall.reader.tasks = []  # type: ignore[attr-defined]
    wall.read(now + 50 * MS)
    assert len(wall.account) == 0
    total = sum(_samples(wall)["000000000000000a"].values())
    assert total == now + 5 * MS - 10  # from its first event to its end


def test_a_request_that_ends_during_a_long_read_gets_no_time_past_its_end() -> None:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    ended: list[int] = []

    class EndsWhileRead(FakeReader):
        def get_all_awaited_by(self) -> list[Any]:
            time.sleep(0.02)
            ended.append(time.monotonic_ns())
            attributor.add(Event(ring.END, ended[0], 1, 0))
            time.sleep(0.02)
            return super().get_all_awaited_by()  # read before the end: still listed

    wall = _reader(EndsWhileRead([task(PARENT, ["sleep", "handler"])], {}), attributor)
    wall.read(time.monotonic_ns())
    wall.reader.tasks = []  # type: ignore[attr-defined]
    wall.read(time.monotonic_ns())
    assert len(wall.account) == 0
    total = sum(_samples(wall)["000000000000000a"].values())
    assert total == ended[0] - 10  # from its first event to its end, nothing after


def test_the_last_flush_closes_ended_requests_at_their_end() -> None:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    wall = _reader(FakeReader([task(PARENT, ["sleep", "handler"])], {}), attributor)
    now = time.monotonic_ns()
    wall.read(now)
    attributor.add(Event(ring.END, now + 5 * MS, 1, 0))
    wall.finish(now + 2000 * MS)  # no read since it ended
    total = sum(_samples(wall)["000000000000000a"].values())
    assert total == now + 5 * MS - 10


def test_reads_get_rarer_when_they_cost_more() -> None:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    cheap = _reader(FakeReader([task(PARENT, ["sleep"])], {}), attributor)
    cheap.read(time.monotonic_ns())
    assert cheap.read_period_ns == 10 * MS  # never more often than the CPU ticks
    dear = _reader(FakeReader([task(PARENT, ["sleep"])], {}, cost=0.004), attributor)
    now = time.monotonic_ns()
    dear.read(now)
    assert dear.read_period_ns >= int(0.004e9 / BUDGET)
    assert not dear.due(now + dear.read_period_ns - 1)
    assert dear.due(now + dear.read_period_ns)


def _moving_request() -> tuple[WallReader, list[int]]:
    attributor = _attributor(Event(ring.TASK, 10, PARENT, 1))
    published: list[int] = []
    wall = WallReader(
        FakeReader([task(PARENT, ["sleep", "handler"])], {}),  # type: ignore[arg-type]
        attributor,
        10 * MS,
        lambda at: 0,
        lambda stack: [("app.py", f.funcname, 0) for f in stack],
        publish=published.append,
    )
    return wall, published


def test_a_move_the_app_saw_splits_the_interval_where_it_happened() -> None:
    wall, published = _moving_request()
    wall.read(time.monotonic_ns())
    wall.reader.tasks = [task(PARENT, ["acquire", "handler"])]  # type: ignore[attr-defined]
    wall.moved(Event(ring.RAN, published[0] + 1, PARENT, 0))  # ran right after the first read
    wall.read(time.monotonic_ns())
    found = _samples(wall)["000000000000000a"]
    # Without the move it would be halves; with it, all but 1 ns goes to where it went.
    assert found[("sleep", "handler")] == published[0] + 1 - 10
    assert found[("acquire", "handler")] == published[1] - published[0] - 1


def test_a_job_starting_on_a_thread_is_a_move_and_later_moves_wait_their_read() -> None:
    wall, published = _moving_request()
    wall.read(time.monotonic_ns())
    later = time.monotonic_ns() + 10**12
    wall.moved(Event(ring.RAN, later, PARENT, 0))  # after the next read began: not for it
    wall.moved(Event(ring.THREAD, published[0] + 5, WORKER, 1))
    wall.reader.tasks = [task(PARENT, ["run_sync", "handler"])]  # type: ignore[attr-defined]
    wall.read(time.monotonic_ns())
    found = _samples(wall)["000000000000000a"]
    assert found[("sleep", "handler")] == published[0] + 5 - 10
    assert [event.t for event in wall._moves] == [later]


def test_time_after_the_last_move_of_an_ended_request_is_not_given_to_its_last_wait() -> None:
    wall, published = _moving_request()
    wall.read(time.monotonic_ns())
    wall.moved(Event(ring.RAN, published[0] + 7, PARENT, 0))  # it ran again, then ended
    wall.attributor.add(Event(ring.END, published[0] + 20, 1, 0))
    wall.reader.tasks = []  # type: ignore[attr-defined]
    wall.read(time.monotonic_ns())
    found = _samples(wall)["000000000000000a"]
    assert found[("sleep", "handler")] == published[0] + 7 - 10
    after = tuple(f.funcname for f in AFTER_LAST_WAIT)
    assert found[after] == 13


def test_a_request_that_ends_between_two_reads_keeps_its_time_under_not_read() -> None:
    attributor = _attributor()
    wall = _reader(FakeReader([], {}), attributor)  # no read ever lists its task
    now = time.monotonic_ns()
    started = Event(ring.TASK, now - 300 * MS, PARENT, 1)
    attributor.add(started)
    wall.seen(started)
    cpu = stacks.Sample(LOOP, PARENT, (frame("burn"),), now - 200 * MS, now - 200 * MS + 1)
    wall.on_cpu([cpu], now - 200 * MS)
    attributor.add(Event(ring.END, now - 100 * MS, 1, 0))
    wall.read(now)
    found = _samples(wall)["000000000000000a"]
    assert found[("burn",)] == 10 * MS
    assert found[tuple(f.funcname for f in NOT_READ)] == 190 * MS  # its duration less its CPU
    assert len(wall.account) == 0


def test_a_failing_wall_read_switches_off_the_wall_profile_not_the_sampler(
    capsys: Any,
) -> None:
    from span_profiles._samplers.builtin import child
    from span_profiles._samplers.builtin.ring import RingWriter

    class Broken(FakeReader):
        def get_all_awaited_by(self) -> list[Any]:
            return [SimpleNamespace(thread_id=LOOP)]  # no ``awaited_by``: a shape we never saw

        def read(self) -> list[stacks.Sample]:
            return []

        def watch(self, tid: int) -> None:
            return None

    writer = RingWriter(64)
    config = {
        "ring_fd": writer.fd,
        "ring_slots": 64,
        "sample_rate": 100,
        "upload_interval": 10,
        "application_name": "test",
        "tags": {},
        "server_address": "http://127.0.0.1:9",
        "basic_auth_username": "",
        "basic_auth_password": "",
        "tenant_id": "",
        "http_headers": {},
        "wall": True,
        "ppid": 1,
        "report_pid": False,
        "line_no": True,
    }
    sampler = child.Sampler(config, Broken([], {}))  # type: ignore[arg-type]
    assert sampler.wall is not None
    sampler.tick()  # must not raise
    assert sampler.wall is None
    assert "wall-clock profiles switched off" in capsys.readouterr().out
    sampler.tick()  # and the CPU side goes on
