"""Shared fixtures: the anyio backend matrix and an instrumented tracer provider."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import span_profiles
from span_profiles.testing import RecordingSink


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


_BACKENDS: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.version_info >= (3, 12):
    _BACKENDS.append(pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio-eager"))
if importlib.util.find_spec("uvloop") is not None:
    _BACKENDS.append(pytest.param(("asyncio", {"loop_factory": _uvloop_loop}), id="uvloop"))
if importlib.util.find_spec("trio") is not None:
    _BACKENDS.append(pytest.param(("trio", {}), id="trio"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on asyncio, asyncio with eager tasks (3.12+), uvloop and trio."""
    return request.param


@pytest.fixture
def backend_id(request: pytest.FixtureRequest, anyio_backend: Any) -> str:
    """The id of the current backend: asyncio, asyncio-eager, uvloop or trio."""
    name, options = anyio_backend
    factory = options.get("loop_factory")
    if factory is _eager_loop:
        return "asyncio-eager"
    if factory is _uvloop_loop:
        return "uvloop"
    return str(name)


class Instrumented:
    """What the ``instrumented`` fixture yields."""

    def __init__(self, provider: TracerProvider, sink: RecordingSink, exporter: Any) -> None:
        self.provider = provider
        self.sink = sink
        self.exporter = exporter
        self.tracer = provider.get_tracer("span-profiles-tests")

    def __iter__(self) -> Iterator[Any]:
        return iter((self.provider, self.sink, self.exporter))


@pytest.fixture
def instrumented() -> Iterator[Instrumented]:
    """A fresh SDK provider with an in-memory exporter, instrumented with a RecordingSink."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = RecordingSink()
    span_profiles.uninstrument()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    try:
        yield Instrumented(provider, sink, exporter)
    finally:
        span_profiles.uninstrument()
        provider.shutdown()


@pytest.fixture(autouse=True)
def _no_agent_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters start the real agent by default; tests opt in explicitly instead."""
    monkeypatch.setenv("SPAN_PROFILES_PROFILER", "off")
