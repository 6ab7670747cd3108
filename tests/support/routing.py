"""The e2e check for issue 9's "samples before routing": no routed sample carries a bare method.

Shared by the Flask and Django end-to-end tests, which serve an app that burns CPU in code the
framework runs before it routes (session opening, middlewares) and check the receiver's database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, Selection
from span_profiles.receiver.web.server import Receiver, start_receiver_in_thread
from tests.support.examples import Served

BARE_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "HTTP"})


@pytest.fixture
def routing_receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a free loopback port, storing into a fresh database."""
    started = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        yield started
    finally:
        started.stop()


def assert_routed_samples_named(
    db_path: Path,
    served: Sequence[Served],
    template: Callable[[str], str],
    *,
    service: str,
    before_routing: str,
) -> Counter[str]:
    """Every sample of every served request carries one ``span_name``: its route's name.

    ``template`` gives the expected span name for a served path. ``before_routing`` is a
    function the app burns in before the framework routes: its samples must be there (else the
    test proves nothing) and carry the route too. Returns the span names seen, with counts.
    """
    names: Counter[str] = Counter()
    early = 0
    total = 0
    with ProfileReader(db_path) as store:
        assert store.services() == [service], f"service names: {store.services()}"
        for request in served:
            expected = template(request.path)
            for sample in store.samples(Selection(span_ids=(request.span_id,))):
                values = sample.label_values("span_name")
                assert values == (expected,), (
                    f"{request.path} span {request.span_id}: span_name {values}, "
                    f"expected ({expected!r},); frames {sample.functions[:6]}"
                )
                assert not BARE_METHODS & set(values)
                names[values[0]] += sample.count
                total += sample.count
                if any(
                    f == before_routing or f.endswith("." + before_routing)
                    for f in sample.functions
                ):
                    early += sample.count
    # Each request burns 50 ms of wall time (5 samples at 100 Hz); on a loaded machine part of it
    # is spent off-CPU, which `oncpu` sampling rightly leaves out. Two per request proves sampling.
    assert total >= 2 * len(served), f"only {total} samples for {len(served)} requests"
    assert early > 0, f"no {before_routing} sample under any request span: {names}"
    return names
