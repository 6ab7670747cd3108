"""Fixtures for the receiver tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh database location."""
    return tmp_path / "profiles.db"
