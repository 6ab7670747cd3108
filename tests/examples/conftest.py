"""Fixtures for the example tests: a receiver on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from span_profiles.receiver.server import Receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A local Pyroscope-compatible receiver storing into a fresh database."""
    pytest.importorskip("google.protobuf")
    from span_profiles.receiver.server import start_receiver_in_thread

    started = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        yield started
    finally:
        started.stop()
