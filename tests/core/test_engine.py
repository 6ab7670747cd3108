"""The label table without the GIL's help: what holds when threads really run at once."""

from __future__ import annotations

import threading
from typing import Any

from span_profiles._core import engine


def test_a_rename_racing_the_end_never_brings_the_labels_back() -> None:
    """A rename on one thread that is building the new labels when another thread ends the span:
    the span ends with no labels (without the holder's lock the rename would store them after
    the end; free-threaded builds run the two truly at once)."""
    building, finish = threading.Event(), threading.Event()

    def make(name: Any) -> engine.Labels:
        if made and not building.is_set():  # the rename (the first call is the constructor)
            building.set()
            assert finish.wait(5)
        made.append(name)
        return (("span_id", "00000000000000aa"), ("span_name", str(name)))

    made: list[Any] = []
    holder = engine.Holder("GET /items", make)
    renamer = threading.Thread(target=holder.renamed)
    renamer.start()
    assert building.wait(5)
    ender = threading.Thread(target=holder.end)
    ender.start()
    ender.join(0.2)  # the end waits for the rename in progress
    finish.set()
    renamer.join(5)
    ender.join(5)
    assert holder.labels == engine.EMPTY
    holder.renamed()  # a later rename of an ended span changes nothing
    assert holder.labels == engine.EMPTY
