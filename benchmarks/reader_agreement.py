"""Stage-1 check of the built-in sampler's reader: does each sample name the task it read?

Run: ``python benchmarks/reader_agreement.py`` (CPython 3.14+; about 1 minute). Prints a table;
writes ``benchmarks/results/reader_agreement-py3XX.md``.

The app (this process) runs 20 asyncio tasks, each with its own coroutine function ``co<i>``
burning slices of ``--slice-us`` with ``await asyncio.sleep(0)`` between them, plus two worker
threads burning in ``thr<j>``. A sampler process (the built-in one's reader, started the way the
sampler is) samples it at 100 Hz for ``--seconds`` and writes every sample. A task sample is
**right** when the outermost ``co*`` frame is the one of the task the sample names, **wrong**
when it is another task's, **machinery** when the read (paused) caught the task between its
coroutine frames (Task step bookkeeping: attributed to the task, which is right). Thread samples
must show their thread's ``thr*`` frame. ``spread`` is the max/min ratio of samples per task
(every task does the same work, so a biased drop would show here). ``app rate`` is the burn
slices per second the loop managed while sampled, against a run without a sampler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from span_profiles._samplers.builtin import launch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _burn(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


async def _base(slice_ns: int, counter: list[int]) -> None:
    while True:
        _burn(slice_ns)
        counter[0] += 1
        await asyncio.sleep(0)


def _named(function: Any, name: str) -> Any:
    code = function.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, function.__globals__, name)


def _thread_base(stop: threading.Event) -> None:
    while not stop.is_set():
        _burn(2_000_000)
        time.sleep(0.002)


async def _run(slice_us: float, seconds: float, mode: str, out: Path) -> dict[str, Any]:
    names: dict[int, str] = {}
    counter = [0]
    tasks = []
    for i in range(20):
        task = asyncio.create_task(_named(_base, f"co{i}")(int(slice_us * 1000), counter))
        names[id(task)] = f"co{i}"
        tasks.append(task)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_named(_thread_base, f"thr{j}"), args=(stop,), daemon=True)
        for j in range(2)
    ]
    for thread in threads:
        thread.start()
    await asyncio.sleep(0.2)
    thread_names = {t.native_id: f"thr{j}" for j, t in enumerate(threads)}
    started = time.perf_counter()
    before = counter[0]
    if mode == "none":
        await asyncio.sleep(seconds)
        result: dict[str, Any] = {"samples": [], "stats": {}}
    else:
        argv = launch.command(
            "span_profiles._samplers.builtin.stacks:main",
            str(os.getpid()),
            str(seconds),
            "100",
            "1" if mode == "paused" else "0",
            str(out),
        )
        process = await asyncio.create_subprocess_exec(*argv)
        await process.wait()
        result = json.loads(out.read_text())
    rate = (counter[0] - before) / (time.perf_counter() - started)
    stop.set()
    for task in tasks:
        task.cancel()
    return {"names": names, "threads": thread_names, "rate": rate, **result}


def classify(run: dict[str, Any]) -> dict[str, Any]:
    """Counts of right/wrong/machinery task samples and right/wrong thread samples."""
    counts: Counter[str] = Counter()
    per_task: Counter[str] = Counter()
    reads = [s[4] - s[3] for s in run["samples"]]
    for tid, task, frames, _, _ in run["samples"]:
        if task:
            expected = run["names"].get(task)
            outer = next((f for f in reversed(frames) if f.startswith("co")), None)
            if expected is None:
                counts["unknown task"] += 1
            elif outer is None:
                counts["machinery"] += 1
                per_task[expected] += 1
            elif outer == expected:
                counts["right"] += 1
                per_task[expected] += 1
            else:
                counts["wrong"] += 1
        elif tid in run["threads"]:
            ok = run["threads"][tid] in frames
            counts["thread right" if ok else "thread wrong"] += 1
        else:
            counts["other thread"] += 1
    spread = max(per_task.values()) / min(per_task.values()) if len(per_task) == 20 else 0.0
    return {
        "counts": counts,
        "spread": spread,
        "read_us": statistics.median(reads) / 1000 if reads else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run every combination and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slice-us", type=float, action="append")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], action="append")
    args = parser.parse_args(argv)
    slices = args.slice_us or [5.0, 100.0, 2000.0]
    loops = args.loop or ["asyncio", "uvloop"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for loop in loops:
            for slice_us in slices:
                for mode in ("none", "paused", "unpaused"):
                    out = Path(tmp) / f"{loop}-{slice_us}-{mode}.json"
                    coro = _run(slice_us, args.seconds, mode, out)
                    if loop == "uvloop":
                        import uvloop

                        run = uvloop.run(coro)
                    else:
                        run = asyncio.run(coro)
                    rows.append((loop, slice_us, mode, run, classify(run)))
                    print(f"{loop} {slice_us} {mode} done", file=sys.stderr, flush=True)
    lines = [
        "# Built-in sampler reader: agreement of task and frames",
        "",
        f"`python benchmarks/reader_agreement.py --seconds {args.seconds:g}` — "
        f"{time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared machine: other sessions were running).",
        "",
        "| loop | slice | mode | task samples | right (incl. machinery) | wrong | machinery | torn (retried) | "
        "dropped | thread right/wrong | spread | read µs | sampler CPU | app rate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    base_rate: dict[tuple[str, float], float] = {}
    for loop, slice_us, mode, run, result in rows:
        if mode == "none":
            base_rate[(loop, slice_us)] = run["rate"]
            continue
        c = result["counts"]
        stats = run["stats"]
        tasks = c["right"] + c["wrong"] + c["machinery"]
        share = f"{100 * (c['right'] + c['machinery']) / tasks:.2f} %" if tasks else "-"
        lines.append(
            f"| {loop} | {slice_us:g} µs | {mode} | {tasks} | {share} | {c['wrong']} | "
            f"{c['machinery']} | {stats['torn']} | {stats['dropped_torn']} | "
            f"{c['thread right']}/{c['thread wrong']} | {result['spread']:.2f} | "
            f"{result['read_us']:.0f} | "
            f"{100 * stats['cpu_seconds'] / stats['seconds']:.1f} % | "
            f"{100 * run['rate'] / base_rate[(loop, slice_us)]:.1f} % |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    (RESULTS / f"reader_agreement-{version}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
