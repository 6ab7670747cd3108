"""Fixtures for the profiler tests: a fake agent module and a clean profiler state per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from span_profiles import _placement, _profiler
from span_profiles._core import guard
from tests.support.placement import reset_placement
from tests.support.profiler import FakeAgent


@pytest.fixture(autouse=True)
def clean_profiler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no agent, no remembered threads and nothing logged; affinity restored.

    The placement monitor does not look during these tests: on a busy machine it would see the
    test's thread wait for its CPU and move it (tests/placement covers moving).
    """
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    monkeypatch.setattr(_placement, "CHECK_INTERVAL", 3600.0)
    yield
    _profiler.stop_profiler()
    _profiler._agent = None
    _profiler._name_warned = _profiler._fork_warned = _profiler._none_warned = False
    reset_placement()
    guard.reset()
    if mask is not None:
        os.sched_setaffinity(0, mask)


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> FakeAgent:
    """Install a :class:`FakeAgent` as the ``pyroscope`` module; the environment holds no settings."""
    agent = FakeAgent()
    monkeypatch.setitem(sys.modules, "pyroscope", agent)
    for name in list(os.environ):
        if name.startswith(("PYROSCOPE_", "SPAN_PROFILES_", "OTEL_")):
            monkeypatch.delenv(name)
    # These tests are about the agent: on CPython 3.14 "auto" would take the built-in sampler.
    monkeypatch.setenv("SPAN_PROFILES_SAMPLER", "pyroscope")
    return agent


@pytest.fixture
def two_cpus() -> list[int]:
    """The CPUs this process may use; skips the test when pinning cannot be observed."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("CPU pinning needs Linux")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("CPU pinning needs at least two usable CPUs")
    return cpus
