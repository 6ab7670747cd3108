"""Attribution by identity: the labels an identity had before the read, or a counted drop."""

from __future__ import annotations

from span_profiles._samplers.builtin import ring
from span_profiles._samplers.builtin.ring import Event
from tests.support.attribution import A, B
from tests.support.attribution import attributor as _attributor

A_RENAMED = (("span_id", "000000000000000a"), ("span_name", "GET /a/{id}"))
LOOP, WORKER, TASK, OTHER = 100, 200, 0x7F0000001000, 0x7F0000002000


def test_a_task_sample_takes_the_labels_its_task_had_before_the_read() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, TASK, 0),  # created outside any span
        Event(ring.TASK, 20, TASK, 1),  # the request span attached inside it
        Event(ring.TASK, 40, TASK, 0),  # detached
        Event(ring.TASK, 25, OTHER, 2),
    )
    assert attributor.attribute(LOOP, TASK, 15, 18).labels == ()
    assert attributor.attribute(LOOP, TASK, 21, 30).labels == A
    assert attributor.attribute(LOOP, OTHER, 26, 30).labels == B
    assert attributor.attribute(LOOP, TASK, 41, 50).labels == ()


def test_a_change_inside_the_read_window_drops_the_sample() -> None:
    attributor = _attributor(Event(ring.TASK, 10, TASK, 1), Event(ring.TASK, 20, TASK, 2))
    outcome = attributor.attribute(LOOP, TASK, 19, 21)
    assert outcome.labels is None
    assert outcome.reason == "changed"
    assert attributor.counts["changed"] == 1
    # Another identity's change inside the window does not matter.
    attributor.add(Event(ring.TASK, 30, OTHER, 1))
    assert attributor.attribute(LOOP, TASK, 29, 31).labels == B


def test_a_reused_task_address_starts_over_at_its_creation() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, TASK, 1),  # task 1 at this address, labelled A; it ends
        Event(ring.TASK, 50, TASK, 0),  # a new task at the same address, no span yet
    )
    assert attributor.attribute(LOOP, TASK, 60, 61).labels == ()


def test_threads_are_attributed_by_their_own_events() -> None:
    attributor = _attributor(
        Event(ring.THREAD, 10, WORKER, 1),  # job of request A starts
        Event(ring.THREAD, 20, WORKER, 0),  # and ends
        Event(ring.THREAD, 30, WORKER, 2),  # job of request B
    )
    assert attributor.attribute(WORKER, 0, 11, 19).labels == A
    assert attributor.attribute(WORKER, 0, 21, 29).labels == ()
    assert attributor.attribute(WORKER, 0, 31, 40).labels == B
    assert attributor.attribute(WORKER, 0, 19, 21).labels is None
    # A thread never heard of has no labels; the loop thread outside tasks likewise.
    assert attributor.attribute(999, 0, 5, 6).labels == ()
    assert attributor.attribute(LOOP, 0, 5, 6).labels == ()


def test_renames_and_ends_apply_from_their_time() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, TASK, 1),
        Event(ring.DEFINE, 15, 3, 0, A_RENAMED),
        Event(ring.RENAME, 15, 1, 3),
        Event(ring.END, 30, 3, 0),
    )
    assert attributor.attribute(LOOP, TASK, 11, 12).labels == A
    assert attributor.attribute(LOOP, TASK, 16, 20).labels == A_RENAMED
    assert attributor.attribute(LOOP, TASK, 31, 35).labels == ()


def test_an_unknown_task_inside_an_eager_creation_takes_its_labels() -> None:
    attributor = _attributor(
        Event(ring.EAGER, 10, LOOP, 2),
        Event(ring.EAGER_END, 20, LOOP, 0),
        Event(ring.TASK, 20, TASK, 2),
    )
    assert attributor.attribute(LOOP, TASK, 12, 15).labels == B
    # Outside the bracket, or on another thread, an unknown task has no labels.
    assert attributor.attribute(LOOP, OTHER, 25, 26).labels == ()
    assert attributor.attribute(WORKER, OTHER, 12, 15).labels == ()


def test_after_lost_events_only_what_was_heard_since_counts() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, TASK, 1),
        Event(ring.TASK, 20, OTHER, 1),
        None,  # lost records, written between t=20 and t=30
        Event(ring.TASK, 30, OTHER, 2),
    )
    assert attributor.attribute(LOOP, TASK, 12, 13).labels == A  # before the loss
    assert attributor.attribute(LOOP, TASK, 21, 22).reason == "lost"
    assert attributor.attribute(LOOP, TASK, 40, 41).reason == "lost"
    assert attributor.attribute(LOOP, OTHER, 40, 41).labels == B


def test_forgetting_keeps_what_later_samples_need() -> None:
    attributor = _attributor(
        Event(ring.TASK, 10, TASK, 1),  # a long-lived task of live span A
        Event(ring.TASK, 10, OTHER, 2),
        Event(ring.END, 12, 2, 0),  # span B ended: OTHER's labels are dead
        Event(ring.THREAD, 12, WORKER, 0),
    )
    attributor.forget_before(1000)
    assert attributor.attribute(LOOP, TASK, 2000, 2001).labels == A
    assert attributor.attribute(LOOP, OTHER, 2000, 2001).labels == ()
    assert len(attributor) == 1
