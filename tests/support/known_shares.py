"""A small store with known shares, shared by the flame, diff, export, UI and browser tests."""

from __future__ import annotations

import time
from pathlib import Path

from span_profiles.receiver import ProfileStore
from tests.support.receiver import PERIOD, sample, series

#: Three spans of ``GET /a`` (service ``shop``), one of ``GET /b`` and one of another service.
A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"
C = "cccccccccccccccc"
D = "dddddddddddddddd"
E = "eeeeeeeeeeeeeeee"
#: span id -> (span_name, service, [(stack leaf first, samples), ...])
SPANS: dict[str, tuple[str, str, list[tuple[tuple[str, ...], int]]]] = {
    A: ("GET /a", "shop", [(("burn_a", "handler", "main"), 6), (("slow_io", "main"), 4)]),
    B: ("GET /a", "shop", [(("burn_a", "handler", "main"), 18), (("other", "handler", "main"), 2)]),
    C: ("GET /a", "shop", [(("burn_a", "handler", "main"), 27), (("slow_io", "main"), 3)]),
    D: ("GET /b", "shop", [(("b_work", "main"), 5)]),
    E: ("GET /a", "elsewhere", [(("foreign", "main"), 7)]),
}
#: Samples without any span label (loop work), in service ``shop``.
UNLABELLED = [(("idle", "loop"), 11)]


def sample_count(span_id: str) -> int:
    """How many samples span ``span_id`` has in :func:`fill`'s store."""
    return sum(count for _, count in SPANS[span_id][2])


def fill(db_path: Path, *, now: float | None = None) -> Path:
    """Write :data:`SPANS` and :data:`UNLABELLED` into a new store at ``db_path``.

    Each span's stacks arrive in two uploads 20 s apart, so a span spans several profiles.
    """
    now = time.time() if now is None else now
    with ProfileStore(db_path) as store:
        for offset in (40.0, 20.0):
            by_service: dict[str, list[object]] = {}
            for span_id, (name, service, stacks) in SPANS.items():
                for functions, count in stacks:
                    # Split each stack's samples over the two uploads (the first gets the odd one).
                    part = (count + 1) // 2 if offset == 40.0 else count // 2
                    if part:
                        by_service.setdefault(service, []).append(
                            sample(functions, part, [("span_id", span_id), ("span_name", name)])
                        )
            if offset == 40.0:
                for functions, count in UNLABELLED:
                    by_service["shop"].append(sample(functions, count))
            store.add(
                [series(samples, service=service) for service, samples in by_service.items()],  # type: ignore[arg-type]
                received_at=now - offset,
            )
    return db_path


CPU_NS_PER_SAMPLE = PERIOD
