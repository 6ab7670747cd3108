"""Helpers for the receiver tests: test vectors and small profiles built by hand."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from span_profiles.receiver.model import Profile, Sample, Series

DATA = Path(__file__).parent / "data"
PERIOD = 10_000_000
CPU = ("cpu", "nanoseconds")


def upload_bodies(case: str) -> list[Path]:
    """The copied ``NNNN.body`` files of one capture case, in order."""
    bodies = sorted((DATA / case).glob("*.body"))
    assert bodies, f"no test vectors for {case}"
    return bodies


def upload_headers(body: Path) -> dict[str, str]:
    """The request headers captured with ``body``."""
    meta = json.loads(body.with_suffix(".json").read_text())
    return {name: value for name, value in meta["headers"]}


def spans_json(case: str) -> dict[str, list[str]]:
    """Root span id -> ``[path, query]`` for one asyncio case."""
    spans: dict[str, list[str]] = json.loads((DATA / case / "spans.json").read_text())
    return spans


def sample(
    functions: Sequence[str],
    count: int = 1,
    labels: Sequence[tuple[str, str]] = (),
    files: Sequence[str] | None = None,
) -> Sample:
    """A CPU sample of ``count`` periods, stack given leaf first."""
    return Sample(
        values=(count * PERIOD,),
        functions=tuple(functions),
        files=tuple(files) if files is not None else tuple(f"/srv/{f}.py" for f in functions),
        labels=tuple(labels),
    )


def series(
    samples: Sequence[Sample],
    service: str = "svc",
    extra: Sequence[tuple[str, str]] = (),
    *,
    name: str = "process_cpu",
) -> Series:
    """One series (``__name__`` ``name``: ``process_cpu``, or ``wall`` with samples of type
    ``wall/nanoseconds``) with a single profile holding ``samples``."""
    kind = ("wall", "nanoseconds") if name == "wall" else CPU
    profile = Profile(
        sample_types=(kind,),
        period_type=kind,
        period=PERIOD,
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=10_000_000_000,
        samples=tuple(samples),
    )
    labels = (("__name__", name), ("service_name", service), *extra)
    return Series(labels=labels, profiles=(profile,))


def read_until_closed(client: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    chunks = []
    try:
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - start
