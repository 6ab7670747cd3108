"""Attributors for the built-in sampler's tests: two requests' labels, defined up front."""

from __future__ import annotations

from span_profiles._samplers.builtin import ring
from span_profiles._samplers.builtin.attribution import Attributor
from span_profiles._samplers.builtin.ring import Event

A = (("span_id", "000000000000000a"), ("span_name", "GET /a"))
B = (("span_id", "000000000000000b"), ("span_name", "GET /b"))


def attributor(*events: Event | None) -> Attributor:
    """An :class:`Attributor` that knows ``A`` (label id 1) and ``B`` (2), then ``events``."""
    made = Attributor()
    made.add(Event(ring.DEFINE, 1, 1, 0, A))
    made.add(Event(ring.DEFINE, 1, 2, 0, B))
    for event in events:
        made.add(event)
    return made
