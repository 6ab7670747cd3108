"""The app side of the built-in sampler: hooks and sink turn label changes into ring events.

In-process and without a sampler: the events go into a real ring, and "samples" are taken by
the test itself (the running task's id, or the thread, and ``time.monotonic_ns()`` around a
point in the code), then attributed from the events exactly as the sampler process does.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles import _samplers
from span_profiles._core import engine
from span_profiles._samplers.builtin import ring
from span_profiles._samplers.builtin.attribution import Attributor
from span_profiles._samplers.builtin.ring import RingReader, RingWriter
from span_profiles._samplers.builtin.sink import EventSink
from span_profiles._settings import Settings

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12) or not sys.platform.startswith("linux"),
    reason="the built-in sampler's hooks need Task.get_context (3.12+) and memfd (Linux)",
)


class Probe:
    """Samples taken by the test: (thread, task id or 0, t0, t1, the labels expected)."""

    def __init__(self) -> None:
        self.points: list[tuple[int, int, int, int, tuple[tuple[str, str], ...]]] = []

    def take(self, expected: tuple[tuple[str, str], ...]) -> None:
        t0 = time.monotonic_ns()
        task = 0
        try:
            if threading.current_thread() is threading.main_thread():
                current = asyncio.current_task()
                task = id(current) if current is not None else 0
        except RuntimeError:
            pass
        self.points.append((threading.get_native_id(), task, t0, t0 + 1, expected))


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, EventSink, RingReader]]:
    monkeypatch.setattr(_samplers, "builtin_usable", lambda: (True, "test"))
    monkeypatch.setattr(_samplers, "agent_usable", lambda: (False, "test"))
    span_profiles.uninstrument()
    provider = TracerProvider()
    settings = Settings.resolve({"sampler": "builtin", "profiler": "auto"}, environ={})
    span_profiles.instrument(tracer_provider=provider, settings=settings)
    sink = engine.current_sink()
    assert isinstance(sink, EventSink)
    writer = RingWriter(1 << 12)
    reader = RingReader(writer.fd, 1 << 12)
    sink.attach(writer)
    try:
        yield provider.get_tracer("test"), sink, reader
    finally:
        sink.detach()
        span_profiles.uninstrument()
        provider.shutdown()


def _labels(span: Any) -> tuple[tuple[str, str], ...]:
    return (("span_id", format(span.get_span_context().span_id, "016x")), ("span_name", span.name))


def _check(reader: RingReader, probe: Probe) -> Attributor:
    attributor = Attributor()
    for event in reader.drain():
        attributor.add(event)
    for tid, task, t0, t1, expected in probe.points:
        assert attributor.attribute(tid, task, t0, t1).labels == expected, (tid, task)
    return attributor


def test_no_per_step_hook_is_installed(setup: Any) -> None:
    assert not hasattr(asyncio.events.Handle._run, "__wrapped__")
    assert hasattr(asyncio.base_events.BaseEventLoop.create_task, "__wrapped__")


def test_tasks_children_and_worker_threads_are_attributed_by_identity(setup: Any) -> None:
    tracer, _sink, reader = setup
    probe = Probe()

    async def child(expected: Any) -> None:
        probe.take(expected)
        await asyncio.sleep(0)
        probe.take(expected)

    def job(expected: Any) -> None:
        probe.take(expected)

    async def request(name: str) -> None:
        probe.take(())
        with tracer.start_as_current_span(name) as span:
            labels = _labels(span)
            probe.take(labels)
            await asyncio.sleep(0)
            probe.take(labels)
            await asyncio.gather(asyncio.create_task(child(labels)), child(labels))
            await asyncio.to_thread(job, labels)
            probe.take(labels)
        probe.take(())

    async def main() -> None:
        await asyncio.gather(*(request(f"r{i}") for i in range(5)))

    asyncio.run(main())
    attributor = _check(reader, probe)
    assert attributor.counts["labelled"] >= 5 * 7
    assert attributor.counts["changed"] == 0


def test_a_rename_and_the_end_of_a_span_reach_the_sampler(setup: Any) -> None:
    tracer, _sink, reader = setup
    probe = Probe()

    async def main() -> None:
        span = tracer.start_span("GET")
        with span_profiles_context(span):
            probe.take(_labels(span))
            span.update_name("GET /items/{id}")
            probe.take(_labels(span))
            span.end()
            probe.take(())

    asyncio.run(main())
    events = _check(reader, probe)
    assert events.counts["labelled"] == 2


def span_profiles_context(span: Any) -> Any:
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False)


def test_an_eager_first_step_takes_its_creators_labels(setup: Any) -> None:
    """The first step runs inside create_task, before the task is announced: the EAGER bracket
    around the creation gives it the labels its context has."""
    tracer, _sink, reader = setup
    probe = Probe()

    async def child(expected: Any) -> None:
        probe.take(expected)  # inside create_task
        await asyncio.sleep(0)
        probe.take(expected)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        with tracer.start_as_current_span("eager") as span:
            await asyncio.create_task(child(_labels(span)))

    asyncio.run(main())
    assert _check(reader, probe).counts["labelled"] == 2


def test_uvloop_tasks_are_announced_by_the_task_factory(setup: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    tracer, _sink, reader = setup
    probe = Probe()

    async def child(expected: Any) -> None:
        probe.take(expected)
        await asyncio.sleep(0)
        probe.take(expected)

    async def main() -> None:
        with tracer.start_as_current_span("uv") as span:
            labels = _labels(span)
            await asyncio.gather(*(asyncio.create_task(child(labels)) for _ in range(3)))

    uvloop.run(main())
    attributor = _check(reader, probe)
    assert attributor.counts["labelled"] == 6


def test_trio_keeps_its_per_step_hook_as_thread_events(setup: Any) -> None:
    trio = pytest.importorskip("trio")
    tracer, _sink, reader = setup
    probe = Probe()

    async def request(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            labels = _labels(span)
            for _ in range(3):
                probe.take(labels)
                await trio.sleep(0)

    async def main() -> None:
        span_profiles_root = tracer.start_span("warm-up")
        span_profiles_root.end()
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(request, f"t{i}")

    trio.run(main)
    attributor = _check(reader, probe)
    assert attributor.counts["labelled"] == 12


def test_nothing_is_written_before_the_sampler_starts(setup: Any) -> None:
    tracer, sink, reader = setup
    sink.detach()

    async def main() -> None:
        with tracer.start_as_current_span("before"):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert list(reader.drain()) == []


@pytest.mark.parametrize(
    ("setting", "agent", "builtin", "reads", "expected"),
    [
        ("auto", True, True, True, "builtin"),  # 3.14 with the agent: the built-in one...
        ("auto", True, True, False, "pyroscope"),  # ...unless it could not read the app
        ("auto", False, True, False, "builtin"),  # 3.15, or no agent: nothing else can run
        ("auto", True, False, True, "pyroscope"),  # 3.10-3.13
        ("auto", False, False, True, None),
        ("pyroscope", False, True, True, "pyroscope"),
        ("builtin", True, True, False, "builtin"),
        ("builtin", True, False, True, None),
    ],
)
def test_the_choice_of_sampler(
    setting: str, agent: bool, builtin: bool, reads: bool, expected: str
) -> None:
    choice = _samplers.choose(
        setting,
        agent=lambda: (agent, "agent?"),
        builtin=lambda: (builtin, "builtin?"),
        reads=lambda: (reads, "reads?"),
    )
    assert choice.name == expected
    if expected is None:
        assert "builtin?" in choice.reason


def test_doctor_reads_yama_and_the_interpreter(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from span_profiles._samplers.builtin import checks

    scope = tmp_path / "ptrace_scope"
    for value, status in (("0", "ok"), ("1", "ok"), ("2", "problem"), ("3", "problem")):
        scope.write_text(value + "\n")
        assert checks.check_yama(str(scope)).status == status
    assert checks.check_yama(str(tmp_path / "absent")).status == "ok"
    monkeypatch.setattr(checks, "builtin_usable", lambda: (False, "needs CPython 3.14"))
    found = checks.all_checks(Settings())
    assert [c.name for c in found] == ["builtin"]
    assert found[0].status == "problem"


@pytest.mark.e2e
def test_preflight_sees_a_seccomp_filter_that_denies_process_vm_readv() -> None:
    """In a child with the e2e app's seccomp filter, the preflight says the app is unreadable."""
    import subprocess

    from tests.support.servers import ROOT

    if os.uname().machine != "x86_64":
        pytest.skip("the test's seccomp filter is written for x86_64")
    script = (
        "from tests.support.apps.builtin_app import deny_process_vm_readv\n"
        "from span_profiles._samplers.builtin import preflight\n"
        "print(preflight.readable()[0])\n"
        "deny_process_vm_readv()\n"
        "print(preflight.readable())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "E2E_RECEIVER_URL": "http://127.0.0.1:9", "SP_IMPORT_ONLY": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "True"
    assert after.startswith("(False"), after
    assert "process_vm_readv" in after, after


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_with_wall_profiles_a_tasks_first_step_since_each_read_is_written(
    setup: Any, loop: str
) -> None:
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    _tracer, sink, _reader = setup
    writer = RingWriter(1 << 12)
    reader = RingReader(writer.fd, 1 << 12)
    sink.detach()
    sink.attach(writer, steps=True)
    resumes = sink._resumes
    assert resumes is not None
    stamps: list[int] = []
    workers: list[int] = []

    async def work() -> None:
        for _ in range(6):
            await asyncio.sleep(0.002)
            await asyncio.sleep(0)  # a second step in the same read interval: not written

    async def main() -> None:
        tasks = [asyncio.create_task(work()) for _ in range(3)]
        workers.extend(id(task) for task in tasks)
        for _ in range(4):  # the test stands in for the sampler's reads
            stamps.append(time.monotonic_ns())
            reader.publish_read(stamps[-1])
            await asyncio.sleep(0.004)
        await asyncio.gather(*tasks)

    run(main())
    ran: dict[int, list[int]] = {}
    for event in reader.drain():
        assert event is not None
        if event.kind == ring.RAN:
            ran.setdefault(event.ident, []).append(event.t)
    for ident in workers:
        times = ran.get(ident, [])
        assert len(times) >= len(stamps) - 1, times  # a record in (nearly) every interval
        # ...and never two in one interval between reads.
        intervals = [sum(t >= stamp for stamp in stamps) for t in times]
        assert len(intervals) == len(set(intervals)), (times, stamps)
    tool = resumes.tool
    sink.detach()
    assert sys.monitoring.get_tool(tool) is None  # type: ignore[attr-defined]


def test_with_every_profiler_tool_id_taken_wall_moves_are_not_recorded(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _tracer, sink, _reader = setup
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined]
    taken = [tool for tool in (2, 3, 4) if monitoring.get_tool(tool) is None]
    for tool in taken:
        monitoring.use_tool_id(tool, "someone else")
    try:
        writer = RingWriter(1 << 12)
        sink.detach()
        with caplog.at_level("INFO", logger="span_profiles"):
            sink.attach(writer, steps=True)
        assert sink._resumes is None
        assert "no free sys.monitoring tool id" in caplog.text
    finally:
        for tool in taken:
            monitoring.free_tool_id(tool)
