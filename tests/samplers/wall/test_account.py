"""The elapsed-time weighting of wall samples and the round-robin subset of visited requests."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from span_profiles._samplers.wall.account import Account, RoundRobin

R1 = (("span_id", "1" * 16),)
R2 = (("span_id", "2" * 16),)
MS = 1_000_000


class Recorder:
    """Collects what the account emits: stack -> ns, per request labels."""

    def __init__(self) -> None:
        self.by_stack: dict[Any, Counter[Any]] = defaultdict(Counter)

    def __call__(self, stack: Any, labels: Any, value: int, at: int) -> None:
        assert value > 0
        self.by_stack[labels][stack] += value

    def total(self, labels: Any) -> int:
        return sum(self.by_stack[labels].values())


@pytest.fixture
def out() -> Recorder:
    return Recorder()


def test_a_request_total_is_its_duration_at_any_visit_rate(out: Recorder) -> None:
    for step in (1, 7, 50, 333):
        out.by_stack.clear()
        account = Account(out)
        account.begin("r", R1, 0)
        at = 0
        while at < 1000 * MS:
            at = min(at + step * MS, 1000 * MS)
            account.visit("r", R1, at, ["sleep"])
        account.end("r", 1000 * MS)
        assert out.total(R1) == 1000 * MS, step


def test_the_first_interval_goes_to_what_the_first_visit_sees(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 100)
    account.visit("r", R1, 400, ["a"])
    assert out.by_stack[R1] == {"a": 300}


def test_on_cpu_time_is_taken_from_the_waiting_time(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.on_cpu("r", "cpu", R1, 30 * MS, 50 * MS)
    account.visit("r", R1, 100 * MS, ["lock"])
    assert out.by_stack[R1] == {"cpu": 30 * MS, "lock": 70 * MS}


def test_more_cpu_than_elapsed_is_a_debt_against_later_waits(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.on_cpu("r", "cpu", R1, 150 * MS, 100 * MS)  # two threads on CPUs at once
    account.visit("r", R1, 100 * MS, ["a"])
    assert "a" not in out.by_stack[R1]
    account.visit("r", R1, 200 * MS, ["a"])
    assert out.by_stack[R1]["a"] == 50 * MS


def test_concurrent_stacks_share_the_time(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 90 * MS + 2, ["c1", "c2", "c3"])
    assert sum(out.by_stack[R1].values()) == 90 * MS + 2
    assert set(out.by_stack[R1]) == {"c1", "c2", "c3"}
    assert max(out.by_stack[R1].values()) - min(out.by_stack[R1].values()) <= 2


def test_a_visit_with_nothing_to_show_keeps_the_time(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 10 * MS, [])
    assert out.total(R1) == 0
    assert account.kept == 1
    account.visit("r", R1, 20 * MS, ["x"])
    assert out.by_stack[R1] == {"x": 20 * MS}


def test_the_end_goes_to_the_last_stacks_seen(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 10 * MS, ["a"])
    assert account.end("r", 25 * MS)
    assert out.by_stack[R1] == {"a": 25 * MS}
    assert not account.end("r", 30 * MS)
    assert "r" not in account


def test_the_end_after_moving_goes_to_where_it_ran(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 10 * MS, ["a"])
    account.on_cpu("r", "cpu", R1, 2 * MS, 20 * MS)
    account.end("r", 30 * MS, moved=15 * MS, after="ran")
    assert out.by_stack[R1] == {"a": 15 * MS, "cpu": 2 * MS, "ran": 13 * MS}


def test_a_known_move_splits_the_interval_there(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 10 * MS, ["sleep"])
    account.visit("r", R1, 20 * MS, ["lock"], moved=18 * MS)
    assert out.by_stack[R1] == {"sleep": 18 * MS, "lock": 2 * MS}


def test_an_unknown_move_splits_the_interval_in_half(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 10 * MS, ["sleep"])
    account.visit("r", R1, 30 * MS, ["lock"])
    assert out.by_stack[R1] == {"sleep": 20 * MS, "lock": 10 * MS}
    account.visit("r", R1, 40 * MS, ["lock"])  # no move: all of it to where it is
    assert out.by_stack[R1]["lock"] == 20 * MS


def test_time_before_the_first_state_seen_goes_to_unseen(out: Recorder) -> None:
    account = Account(out)
    account.begin("r", R1, 0)
    account.visit("r", R1, 50 * MS, ["thread"], moved=1, settled=40 * MS, unseen="start")
    assert out.by_stack[R1] == {"start": 40 * MS, "thread": 10 * MS}


def test_requests_never_share_time(out: Recorder) -> None:
    account = Account(out)
    account.begin("a", R1, 0)
    account.begin("b", R2, 50 * MS)
    account.visit("a", R1, 100 * MS, ["x"])
    account.visit("b", R2, 100 * MS, ["y"])
    account.end_all(200 * MS)
    assert out.by_stack[R1] == {"x": 200 * MS}
    assert out.by_stack[R2] == {"y": 150 * MS}
    assert account.given == 350 * MS


def test_round_robin_visits_each_request_once_per_round_a_bounded_number_at_a_time() -> None:
    queue: RoundRobin[int] = RoundRobin()
    for key in range(10):
        queue.add(key)
        queue.add(key)  # once only
    assert len(queue) == 10
    seen: list[int] = []
    for _ in range(5):
        batch = list(queue.take(4))
        assert len(batch) == 4
        seen += batch
    assert Counter(seen[:10]) == Counter(range(10))  # a whole round before any repeat
    assert seen[10:20] == seen[:10]


def test_round_robin_stops_where_the_caller_stops_and_skips_discarded_keys() -> None:
    queue: RoundRobin[int] = RoundRobin()
    for key in range(5):
        queue.add(key)
    taken = queue.take(5)
    assert next(taken) == 0
    taken.close()  # the caller's budget ran out after one
    queue.discard(1)
    assert list(queue.take(10)) == [2, 3, 4, 0]
    queue.add(1)
    assert 1 in list(queue.take(10))


def test_round_robin_lets_go_of_a_discarded_key_at_once() -> None:
    """A request that ended leaves the queue when it is discarded, however far its turn is
    (a saturated loop's ticks may not come round to it for long), and queued again it is
    there once."""
    queue: RoundRobin[int] = RoundRobin()
    for key in range(1000):
        queue.add(key)
    for key in range(0, 1000, 2):
        queue.discard(key)
    assert len(queue) == 500
    queue.add(1)
    queue.discard(3)
    queue.add(3)
    queue.add(3)
    assert len(queue) == 500
    taken = list(queue.take(1000))
    assert sorted(taken) == list(range(1, 1000, 2))
