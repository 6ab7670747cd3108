"""A small store with known shares, shared by the flame, diff, export, UI and browser tests, and the
wall-clock samples of some of its spans (:func:`fill_wall`)."""

from __future__ import annotations

import time
from pathlib import Path

from span_profiles.receiver import ProfileStore
from span_profiles.receiver.model import Sample
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


#: A span with wall samples only (it waited on a lock and used no CPU the sampler saw).
W = "0f0f0f0f0f0f0f0f"
#: The await site where ``A`` and ``B`` waited longest: a frame of their wall flame graphs.
AWAIT_SITE = "asyncpg.pool.Pool.acquire"
#: span id -> (span_name, service, [(stack leaf first, wall nanoseconds), ...]): where each span's
#: time went, as a wall sampler reports it (sample type wall/nanoseconds, 10 ms period). ``D``
#: and ``E`` have none; 125 ms is 12.5 periods, stored as 13 samples but 0.125 s.
WALL: dict[str, tuple[str, str, list[tuple[tuple[str, ...], int]]]] = {
    A: (
        "GET /a",
        "shop",
        [
            ((AWAIT_SITE, "fetch_user", "handler", "main"), 300_000_000),
            (("burn_a", "handler", "main"), 60_000_000),
            (("asyncio.tasks.sleep", "slow_io", "main"), 125_000_000),
        ],
    ),
    B: (
        "GET /a",
        "shop",
        [
            ((AWAIT_SITE, "fetch_user", "handler", "main"), 100_000_000),
            (("burn_a", "handler", "main"), 180_000_000),
        ],
    ),
    C: ("GET /a", "shop", [(("burn_a", "handler", "main"), 270_000_000)]),
    W: (
        "GET /wait",
        "shop",
        [(("asyncio.locks.Lock.acquire", "wait_for_lock", "main"), 250_000_000)],
    ),
}


def wall_seconds(span_id: str) -> float:
    """The wall-clock seconds of span ``span_id`` in :func:`fill_wall`'s samples."""
    return sum(nanos for _, nanos in WALL[span_id][2]) / 1e9


def wall_sample_count(span_id: str) -> int:
    """How many samples (10 ms periods, rounded half up) span ``span_id``'s wall samples count."""
    return sum((nanos + PERIOD // 2) // PERIOD for _, nanos in WALL[span_id][2])


def wall_samples(span_id: str) -> list[Sample]:
    """The wall samples of one span of :data:`WALL`, labelled as the sampler labels them."""
    name, _, stacks = WALL[span_id]
    labels = [("span_id", span_id), ("span_name", name)]
    return [
        Sample(
            values=(nanos,),
            functions=functions,
            files=tuple(f"/srv/{f}.py" for f in functions),
            labels=tuple(labels),
        )
        for functions, nanos in stacks
    ]


def fill_wall(db_path: Path, *, now: float | None = None) -> Path:
    """Add :data:`WALL` to the store at ``db_path`` (after :func:`fill`): one push of wall series
    (``__name__=wall``), 30 s ago, between :func:`fill`'s two uploads."""
    now = time.time() if now is None else now
    by_service: dict[str, list[Sample]] = {}
    for span_id, (_, service, _) in WALL.items():
        by_service.setdefault(service, []).extend(wall_samples(span_id))
    walls = [series(samples, service, name="wall") for service, samples in by_service.items()]
    with ProfileStore(db_path) as store:
        store.add(walls, received_at=now - 30.0)
    return db_path
