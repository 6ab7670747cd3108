"""Shared fixtures: the anyio backend matrix, an instrumented tracer provider, a receiver; and
the check that every test starting a subprocess, a server or the real agent is marked ``e2e``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import span_profiles
from span_profiles import _samplers
from span_profiles.testing import RecordingSink, recording
from tests.support.backends import BACKENDS, backend_name

if TYPE_CHECKING:
    from span_profiles.receiver import Receiver

pytest_plugins = ["pytester"]  # tests/test_e2e_marker.py runs pytest on the rules below


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on asyncio, asyncio with eager tasks (3.12+), uvloop, uvloop with
    eager tasks (where uvloop runs them) and trio: ``tests/backends.py``."""
    return request.param


@pytest.fixture
def backend_id(request: pytest.FixtureRequest, anyio_backend: Any) -> str:
    """The id of the current backend: asyncio, asyncio-eager, uvloop, uvloop-eager or trio."""
    return backend_name(anyio_backend)


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
    # A test before may have left an adapter's lazy instrumentation behind.
    span_profiles.uninstrument()
    try:
        with recording(tracer_provider=provider) as sink:
            yield Instrumented(provider, sink, exporter)
    finally:
        provider.shutdown()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh database location for a receiver's store."""
    return tmp_path / "profiles.db"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A Pyroscope-compatible receiver on a free loopback port, storing into a fresh database.

    It is a server: tests that use it are ``e2e``.
    """
    pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")
    from span_profiles.receiver import start_receiver_in_thread

    started = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def _no_agent_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters start the real agent by default; tests opt in explicitly instead."""
    monkeypatch.setenv("SPAN_PROFILES_PROFILER", "off")


# --- Every test that starts a subprocess, a server or the real agent is marked e2e. ---
# Checked, not trusted: `nox -s fast` (-m "not e2e") must stay hermetic and quick. Audit events
# (PEP 578) see every process start and every socket bind, from any thread; the real agent is
# seen at pyroscope.configure(). A test not marked e2e that does one of these fails at teardown.

_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system"}
)
_watched: list[str] | None = None
"""What the running test (not marked e2e) did that only an e2e test may do; None: not watching."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen = _watched
    if seen is None:
        return
    if event in _PROCESS_EVENTS:
        seen.append(f"started a process ({event} {args[:2]!r})")
    elif event == "socket.bind" and isinstance(args[1], tuple):  # AF_INET/AF_INET6, not AF_UNIX
        seen.append(f"bound a server socket to {args[1]!r} on {threading.current_thread().name}")


sys.addaudithook(_audit)


@functools.cache
def _real_agent() -> Any | None:
    """The pyroscope-io module, imported now so that no test can start it unseen; None if absent.

    The profiler tests put a fake ``pyroscope`` into ``sys.modules`` while they run; this keeps a
    reference to the real one, whose ``configure`` is what starts the agent.
    """
    if importlib.util.find_spec("pyroscope") is None:
        return None
    return importlib.import_module("pyroscope")


@pytest.fixture(autouse=True)
def _e2e_only_where_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test not marked ``e2e`` that starts a subprocess, a server or the real agent."""
    global _watched
    if request.node.get_closest_marker("e2e") is not None:
        yield
        return
    seen: list[str] = []
    agent = _real_agent()
    if agent is not None:
        configure = agent.configure

        def watched_configure(*args: Any, **kwargs: Any) -> Any:
            seen.append("started the real pyroscope-io agent")
            return configure(*args, **kwargs)

        monkeypatch.setattr(agent, "configure", watched_configure)
    _watched = seen
    try:
        yield
    finally:
        _watched = None
    if seen:
        pytest.fail(
            f"{request.node.nodeid} is not marked e2e but it {'; '.join(dict.fromkeys(seen))}. "
            "Mark it @pytest.mark.e2e (or the module: pytestmark = pytest.mark.e2e), so that "
            "`nox -s fast` leaves it out.",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    """Say why a run that collected no test fails (pytest's exit 5), instead of leaving a guess."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        terminalreporter.write_line(
            "no test was collected or selected: pytest exits 5, which fails the nox session and "
            "so scripts/test.sh and CI. The suite always has tests: check the paths, -m and -k.",
            red=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``sampled`` tests get two reruns (pytest-rerunfailures); ``agent`` tests are skipped, with
    the reason, where pyroscope-io cannot run.

    Sampled tests check shares of real samples against bounds (<= 1 % foreign, enough samples per
    request). On a loaded 2-CPU machine the kernel can preempt the sampler between a stack and its
    labels, or starve it, and push a single run over; a labelling bug gives tens of percent in
    every run.

    Agent tests need the real pyroscope-io. Where it has no build (Python 3.15, free-threaded
    builds: ``span_profiles._samplers.agent_missing``) they skip with that reason; where it only is not
    installed (the ``core`` session, which installs no extra), they skip saying so. The ``tests``
    sessions install the ``pyroscope`` extra, so on 3.10-3.14 they always run there.
    """
    missing = _samplers.agent_missing()
    skip_agent = None
    if missing is not None:
        reason, no_build = missing
        if not no_build:
            reason += " (the `pyroscope` extra)"
        skip_agent = pytest.mark.skip(reason=f"needs the real pyroscope-io agent: {reason}")
    # ``profiles`` tests need a sampler, whichever ``sampler="auto"`` picks here: pyroscope-io
    # on 3.10-3.13, the built-in one on 3.14+ (3.15 included, where pyroscope-io has no build).
    chosen = _samplers.choose("auto")
    skip_profiles = None
    if chosen.name is None:
        skip_profiles = pytest.mark.skip(reason=f"needs a sampler: {chosen.reason}")
    for item in items:
        if item.get_closest_marker("sampled") is not None:
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))
        if skip_agent is not None and item.get_closest_marker("agent") is not None:
            item.add_marker(skip_agent)
        if skip_profiles is not None and item.get_closest_marker("profiles") is not None:
            item.add_marker(skip_profiles)
