"""Time per task step: bare, with our hooks, and with labels unchanged or changing every step.

Run: ``python benchmarks/steps.py`` (add ``--quick`` for a short run). Prints a table of the time
per ``await asyncio.sleep(0)`` step and what each configuration adds over the bare loop, for the
stdlib asyncio loop (``Handle._run`` hook), uvloop (task-factory hook) and trio (instrument), and
writes it to ``benchmarks/results/steps.md``.

Rows:
* bare: no instrumentation at all;
* hooks, no span: ``instrument()`` installed, tasks run without a span;
* labels unchanged: two tasks inside the same root span, so consecutive steps keep the labels;
* labels change every step: two tasks in two root spans, alternating (``span_id`` only), with the
  RecordingSink and with the real pyroscope-io agent (configured, sampling at 100 Hz); once more
  with ``span_name`` too (the default labels), where a switch touches two pairs;
* pyroscope-otel: its ``PyroscopeSpanProcessor`` (tags at span start/end only) as the reference.

A second table: time per ``loop.create_task`` of a coroutine that returns at once, by a creator
inside a root span, bare and with our hooks, for lazy tasks, ``asyncio.eager_task_factory``
(3.12+) and ``create_task(..., eager_start=True)`` (3.14+). An eager task runs its only step
inside that call, and the hooks give the creator its labels back right after it; a lazy task
costs the patched ``create_task`` one test more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles.testing import RecordingSink

STEPS = 200_000
RESULTS = Path(__file__).parent / "results"


async def _stepper(steps: int) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)


async def _run(tracer: Any, steps: int, mode: str) -> float:
    """Two tasks each doing steps/2 steps; returns seconds elapsed."""
    half = steps // 2

    async def task(name: str | None) -> None:
        if name is None:
            await _stepper(half)
        else:
            with tracer.start_as_current_span(name):
                await _stepper(half)

    with tracer.start_as_current_span("warm-up"):  # as a first request would
        await asyncio.sleep(0)
    start = time.perf_counter()
    if mode == "shared":
        with tracer.start_as_current_span("shared"):
            await asyncio.gather(task(None), task(None))
    elif mode == "separate":
        await asyncio.gather(task("a"), task("b"))
    else:
        await asyncio.gather(task(None), task(None))
    return time.perf_counter() - start


async def _trio_run(tracer: Any, steps: int, mode: str) -> float:
    import trio

    half = steps // 2

    async def stepper() -> None:
        for _ in range(half):
            await trio.sleep(0)

    async def task(name: str | None) -> None:
        if name is None:
            await stepper()
        else:
            with tracer.start_as_current_span(name):
                await stepper()

    # A root span installs the per-run trio instrument, as a first request would.
    with tracer.start_as_current_span("warm-up"):
        await trio.sleep(0)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        if mode == "shared":
            with tracer.start_as_current_span("shared"):
                nursery.start_soon(task, None)
                nursery.start_soon(task, None)
        elif mode == "separate":
            nursery.start_soon(task, "a")
            nursery.start_soon(task, "b")
        else:
            nursery.start_soon(task, None)
            nursery.start_soon(task, None)
    return time.perf_counter() - start


def _measure_once(loop_name: str, tracer: Any, steps: int, mode: str) -> float:
    """Nanoseconds per step for one run."""
    gc.collect()
    if loop_name == "trio":
        import trio

        elapsed = trio.run(_trio_run, tracer, steps, mode)
    elif loop_name == "uvloop":
        import uvloop

        elapsed = uvloop.run(_run(tracer, steps, mode))
    else:
        elapsed = asyncio.run(_run(tracer, steps, mode))
    return float(elapsed / steps * 1e9)


BATCHES = 30
"""Task creation: the best of this many batches (the fastest is the least disturbed one)."""


async def _create_tasks(tracer: Any, batches: int, how: str) -> float:
    """Nanoseconds per ``loop.create_task`` of a coroutine that returns at once, the fastest of
    ``batches`` batches of 1000 (eager: the call includes the task's only step); each batch is
    gathered outside the timing."""

    async def child() -> None:
        return None

    loop = asyncio.get_running_loop()
    kwargs: dict[str, Any] = {}
    if how == "eager factory":
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    elif how == "eager_start":
        kwargs["eager_start"] = True
    best = float("inf")
    with tracer.start_as_current_span("creator"):
        for _ in range(batches):
            coros = [child() for _ in range(1000)]
            start = time.perf_counter_ns()
            tasks = [loop.create_task(coro, **kwargs) for coro in coros]
            best = min(best, (time.perf_counter_ns() - start) / 1000)
            await asyncio.gather(*tasks)
    return best


def _creation_modes() -> list[str]:
    modes = ["lazy"]
    if sys.version_info >= (3, 12):
        modes.append("eager factory")
    if sys.version_info >= (3, 14):
        modes.append("eager_start")
    return modes


def _measure_creation(loop_name: str, hooked: bool, batches: int, how: str) -> float:
    """Nanoseconds per task creation, bare or with our hooks (RecordingSink)."""
    span_profiles.uninstrument()
    provider = TracerProvider()
    if hooked:
        span_profiles.instrument(tracer_provider=provider, sink=RecordingSink())
    tracer = provider.get_tracer("bench")
    gc.collect()
    try:
        if loop_name == "uvloop":
            import uvloop

            return float(uvloop.run(_create_tasks(tracer, batches, how)))
        return float(asyncio.run(_create_tasks(tracer, batches, how)))
    finally:
        span_profiles.uninstrument()
        provider.shutdown()


def _creation_table(loops: list[str], batches: int, repeats: int) -> str:
    """Per loop and creation mode: ns per task bare and hooked, best of ``repeats`` (interleaved)."""
    loops = [name for name in loops if name != "trio"]
    best: dict[tuple[str, str, bool], float] = {}
    for _ in range(repeats):
        for loop_name in loops:
            for how in _creation_modes():
                if loop_name == "uvloop" and not _uvloop_runs(how):
                    continue
                for hooked in (False, True):
                    ns = _measure_creation(loop_name, hooked, batches, how)
                    key = (loop_name, how, hooked)
                    best[key] = min(ns, best.get(key, ns))
    lines = [
        "| loop | tasks | bare ns/create_task | hooked ns/create_task | added |",
        "|---|---|---:|---:|---:|",
    ]
    for loop_name, how, hooked in best:
        if hooked:
            bare, ours = best[(loop_name, how, False)], best[(loop_name, how, True)]
            lines.append(
                f"| {loop_name} | {how} | {bare:.0f} | {ours:.0f} | {ours - bare:+.0f} ns |"
            )
    return "\n".join(lines)


def _uvloop_runs(how: str) -> bool:
    # uvloop 0.23 passes eager_start=None to a task factory on 3.13+, which 3.13's eager factory
    # rejects and 3.14's takes as "not eager": the eager factory runs eagerly only on 3.12.
    return how != "eager factory" or sys.version_info[:2] == (3, 12)


Config = tuple[str, str, Callable[[TracerProvider], Any] | None]


def _configs(agent: Any) -> list[Config]:
    def ours(sink_factory: Callable[[], Any], span_name: bool = False) -> Callable[[Any], Any]:
        def setup(provider: TracerProvider) -> Any:
            return span_profiles.instrument(
                tracer_provider=provider, sink=sink_factory(), span_name=span_name
            )

        return setup

    rows: list[Config] = [
        ("bare", "none", None),
        ("hooks, no span", "none", ours(RecordingSink)),
        ("labels unchanged between steps", "shared", ours(RecordingSink)),
        ("labels change every step, RecordingSink", "separate", ours(RecordingSink)),
    ]
    if agent is not None:
        rows.append(
            (
                "labels change every step, PyroscopeSink",
                "separate",
                ours(span_profiles.PyroscopeSink),
            )
        )
        rows.append(
            (
                "labels change every step, PyroscopeSink, span_id + span_name",
                "separate",
                ours(span_profiles.PyroscopeSink, span_name=True),
            )
        )
        rows.append(
            ("labels unchanged, PyroscopeSink", "shared", ours(span_profiles.PyroscopeSink))
        )
        try:
            from pyroscope.otel import PyroscopeSpanProcessor

            def naive(provider: TracerProvider) -> Any:
                provider.add_span_processor(PyroscopeSpanProcessor())

            rows.append(("pyroscope-otel processor (reference)", "separate", naive))
        except ImportError:
            pass
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--loops", default="asyncio,uvloop,trio")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave benchmarks/results alone"
    )
    args = parser.parse_args(argv)
    steps, repeats = (40_000, 3) if args.quick else (STEPS, 7)
    try:
        import pyroscope

        # A closed local port: the agent samples and tags as usual, uploads are dropped.
        pyroscope.configure(
            application_name="span-profiles-bench", server_address="http://127.0.0.1:9"
        )
        agent: Any = pyroscope
    except ImportError:
        agent = None
    loops = []
    for name in args.loops.split(","):
        try:
            __import__({"asyncio": "asyncio", "uvloop": "uvloop", "trio": "trio"}[name])
            loops.append(name)
        except ImportError:
            print(f"skipping {name}: not installed", file=sys.stderr)
    configs = _configs(agent)
    table: dict[str, dict[str, float]] = {label: {} for label, _, _ in configs}
    # Configurations are interleaved within each repeat, so a noisy moment hits all of them
    # alike; the best of the repeats is kept.
    for _ in range(repeats):
        for label, mode, setup in configs:
            for loop_name in loops:
                span_profiles.uninstrument()
                provider = TracerProvider()
                if setup is not None:
                    setup(provider)
                tracer = provider.get_tracer("bench")
                ns = _measure_once(loop_name, tracer, steps, mode)
                span_profiles.uninstrument()
                provider.shutdown()
                table[label][loop_name] = min(ns, table[label].get(loop_name, ns))
    floor = ""
    if agent is not None:
        # The floor of any per-step relabelling: one remove+add pair of the agent itself.
        import timeit

        add, remove = agent.lib.add_thread_tag, agent.lib.remove_thread_tag

        def pair() -> None:
            remove("span_id", "00000000000000aa")
            add("span_id", "00000000000000bb")
            remove("span_id", "00000000000000bb")
            add("span_id", "00000000000000aa")

        rounds = 100_000
        best = min(timeit.repeat(pair, number=rounds, repeat=repeats)) / rounds / 2 * 1e9
        floor = (
            f"One agent remove+add pair alone (native calls, no Python around them): {best:.0f} ns."
        )
    creations = _creation_table(loops, BATCHES // 3 if args.quick else BATCHES, repeats)
    bare = table["bare"]
    header = (
        "| configuration | " + " | ".join(f"{name} ns/step | {name} added" for name in loops) + " |"
    )
    lines = [header, "|" + "---|" * (1 + 2 * len(loops))]
    for label, row in table.items():
        cells = []
        for name in loops:
            cells.append(f"{row[name]:.0f}")
            cells.append("" if label == "bare" else f"{row[name] - bare[name]:+.0f} ns")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    meta = (
        f"Python {platform.python_version()}, {platform.machine()}, {steps} steps x best of "
        f"{repeats}; agent: {'pyroscope-io configured, 100 Hz' if agent else 'not installed'}"
    )
    text = "\n".join(
        [
            meta,
            "",
            *lines,
            "",
            floor,
            "",
            "Task creation (ns per create_task; eager: with the task's only step):",
            "",
            creations,
        ]
    ).rstrip()
    print(text)
    if agent is not None:
        agent.shutdown()
    if args.no_write:
        return 0
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"steps{suffix}.md").write_text(text + "\n")
    (RESULTS / f"steps{suffix}.json").write_text(
        json.dumps(
            {"meta": meta, "ns_per_step": table, "median_bare": statistics.median(bare.values())},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
