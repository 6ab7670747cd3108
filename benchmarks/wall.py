"""Wall-clock span profiles: attribution of known waits, cost, scale, memory (issue 19).

Run: ``python benchmarks/wall.py accuracy|cost|scale|memory [options]``. Each prints its table and
writes ``benchmarks/results/wall-<what>-py3XX.md`` and ``.json``. The app is
``tests/support/apps/wall_app.py`` under a real uvicorn (``tests/support/wall.py`` starts it, with
its slow downstream server in a process of its own), pushing to a receiver in this process.
``--sampler`` picks the path: ``pyroscope`` (the in-process wall producer, CPython 3.10-3.14) or
``builtin`` (the built-in sampler, 3.14+); ``--loop`` ``uvloop`` or ``asyncio``.

* ``accuracy``: rounds of concurrent requests with known waits, each ``--ms`` long: ``/waits``
  (an ``asyncio.sleep``, a lock held by another task, an HTTP call to a slow server, a child task
  awaited by its parent) and ``/sync`` (a sync endpoint sleeping in a worker thread). Per span:
  each part's wall seconds against the part's own duration measured around it in the app (error
  %), the wall total against the span's duration (coverage %), and the seconds of parts its kind
  never runs (another request's time: "foreign").
* ``cost``: requests/s of ``/load`` (``asyncio.sleep(50 ms)`` and a little CPU) with wall
  profiles on against off, the same sampler in both, ``--inflight`` concurrent keep-alive
  connections (default 100 and 1000), fresh servers, interleaved in alternating order for
  ``--repeats`` rounds; medians and every run.
* ``scale``: ``--requests`` requests each awaiting ``--tasks`` child tasks that sleep
  ``--hold`` seconds (100 x 100 = 10,000 suspended tasks in flight), with wall profiles on and
  off: the longest loop stall seen by a loop-lag probe (a 1 ms sleep's late wake-up), the longest
  garbage collection, the wall producer's longest tick (in-process) or read (built-in), and the
  requests' wall coverage.
* ``memory``: a steady ``/load`` for ``--seconds`` with wall profiles on (``--wall off``: the
  baseline); the app's (and the built-in sampler's) resident memory every ``--every`` seconds.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._workload.harness import run_load  # noqa: E402

from tests.support import wall  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PY = f"py{sys.version_info.major}{sys.version_info.minor}"


def _receiver(tmp: Path) -> Any:
    from span_profiles.receiver import start_receiver_in_thread

    return start_receiver_in_thread(port=0, db_path=tmp / "profiles.db")


def _get(url: str) -> Any:
    import httpx

    return httpx.get(url, timeout=60).json()


def _rss_mib(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _loadavg() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def _env(args: argparse.Namespace, wall_on: bool, upload_interval: int = 10) -> dict[str, str]:
    return {
        "SPAN_PROFILES_SAMPLER": args.sampler,
        "SPAN_PROFILES_WALL": "true" if wall_on else "false",
        "PYROSCOPE_UPLOAD_INTERVAL": str(upload_interval),
    }


def _header(args: argparse.Namespace, what: str) -> list[str]:
    return [
        f"# Wall-clock profiles: {what}",
        "",
        f"`python benchmarks/wall.py {' '.join(args.argv)}` — {time.strftime('%Y-%m-%d %H:%M')} "
        f"UTC, Python {platform.python_version()}, sampler {args.sampler}, loop {args.loop}, "
        f"{os.cpu_count()} CPUs, load average at start {args.load_at_start}. Shared machine: "
        "other sessions were running.",
        "",
    ]


def _write(stem: str, lines: list[str], data: dict[str, Any]) -> None:
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str))


# -- accuracy ---------------------------------------------------------------------------------


def accuracy(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            receiver = _receiver(tmp)
            try:
                with wall.wall_app(
                    receiver.url, tmp / "app.log", loop=args.loop, **_env(args, True, 1)
                ) as server:
                    asyncio.run(wall.drive(server.url, rounds=1, per_kind=1, ms=10))
                    _get(server.url + "/lag?reset=1")
                    requests = asyncio.run(
                        wall.drive(
                            server.url, rounds=args.rounds, per_kind=args.per_kind, ms=args.ms
                        )
                    )
                    durations = wall.span_durations(server.url)
                    lag = _get(server.url + "/lag")
                    server.process.send_signal(2)
                    server.process.wait(30)
                wall.wait_for_uploads(1.0)
                spans = wall.judge(receiver.db_path, "wall-e2e", requests, durations)
            finally:
                receiver.stop()
        summary = wall.summary(spans)
        summary["lag"] = lag
        # Where a span's time went when some of it is missing (the parts against their truth).
        summary["under_99_pct"] = [
            {
                "span_id": span_id,
                "collections_ms": durations[span_id].get("collections", []),
                "kind": span.kind,
                "duration_s": round(span.duration, 4),
                "coverage_pct": round(span.coverage * 100, 1),
                "parts_s": {k: round(v, 4) for k, v in span.parts.items()},
                "truth_s": {k: round(v, 4) for k, v in span.truth.items()},
            }
            for span_id, span in spans.items()
            if span.coverage < 0.99
        ]
        runs.append(summary)
        print(f"run {repeat + 1}: {json.dumps(summary)}", file=sys.stderr, flush=True)
    lines = _header(args, "attribution of known waits")
    lines += [
        f"{args.rounds} rounds of {args.per_kind} `/waits` and {args.per_kind} `/sync` requests "
        f"at once, parts of {args.ms} ms; per run: each part's error range over the spans "
        "(wall seconds against the part's own measured duration), coverage (wall total / span "
        "duration) min / median / max, foreign seconds (parts of the other kind).",
        "",
        "| run | spans | sleep | lock | HTTP | child task | worker thread | coverage % | foreign s |",
        "|---|---:|---|---|---|---|---|---|---:|",
    ]
    for index, run in enumerate(runs, 1):
        errors = run["part_error_range"]

        def cell(part: str, errors: dict[str, Any] = errors) -> str:
            low, high = errors.get(part, (0, 0))
            return f"{low:+.1f} .. {high:+.1f} %"

        lines.append(
            f"| {index} | {run['spans']} | {cell('part_sleep')} | {cell('part_lock')} | "
            f"{cell('part_http')} | {cell('child_part')} | {cell('part_thread_sleep')} | "
            f"{run['coverage_min_pct']} / {run['coverage_median_pct']} / "
            f"{run['coverage_max_pct']} | {run['foreign_s']} |"
        )
    worst = max(run["worst_part_error_pct"] for run in runs)
    lines += [
        "",
        f"Worst part error over every span of every run: {worst} %; lowest coverage: "
        f"{min(run['coverage_min_pct'] for run in runs)} %; foreign: "
        f"{sum(run['foreign_s'] for run in runs)} s.",
    ]
    _write(f"wall-accuracy-{args.sampler}-{args.loop}-{PY}", lines, {"runs": runs})


# -- cost ---------------------------------------------------------------------------------------


def _one_load(args: argparse.Namespace, wall_on: bool, inflight: int, tmp: Path) -> dict[str, Any]:
    receiver = _receiver(tmp)
    try:
        with wall.wall_app(
            receiver.url, tmp / "app.log", loop=args.loop, **_env(args, wall_on)
        ) as server:
            port = int(server.url.rpartition(":")[2])
            run_load(port, lambda e, r: "/load?ms=50", concurrency=inflight, duration=2.0)
            load = run_load(
                port, lambda e, r: "/load?ms=50", concurrency=inflight, duration=args.seconds
            )
            stats = _get(server.url + "/lag")
            server.process.send_signal(2)
            server.process.wait(30)
    finally:
        receiver.stop()
    return {"rate": load.rate, "errors": load.errors, "wall": stats.get("wall", {})}


def cost(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, list[float]]] = {}
    detail: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for inflight in args.inflight:
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for repeat in range(args.repeats):
                order = ["on", "off"] if repeat % 2 == 0 else ["off", "on"]
                for config in order:
                    run = _one_load(args, config == "on", inflight, Path(tmp_name))
                    rates[config].append(run["rate"])
                    detail.append({"inflight": inflight, "config": config, **run})
                    print(
                        f"{inflight} in flight, round {repeat + 1}, wall {config}: "
                        f"{run['rate']:.1f} req/s ({run['errors']} errors)",
                        file=sys.stderr,
                        flush=True,
                    )
            results[str(inflight)] = rates
    lines = _header(args, "cost")
    lines += [
        f"`/load` (`asyncio.sleep(50 ms)` + a little CPU), keep-alive connections, {args.seconds:g} s "
        f"per run after 2 s of warm-up, fresh server per run, {args.repeats} rounds in "
        "alternating order.",
        "",
        "| in flight | wall on, req/s (runs) | wall off, req/s (runs) | on / off (medians) | goal |",
        "|---:|---|---|---:|---|",
    ]
    goals = {100: 0.98, 1000: 0.95}
    for inflight in args.inflight:
        rates = results[str(inflight)]
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        ratio = on / off if off else 0.0
        goal = goals.get(inflight)
        verdict = f"≥ {goal}: {'met' if ratio >= goal else 'missed'}" if goal else ""
        lines.append(
            f"| {inflight} | {on:.1f} ({', '.join(f'{r:.1f}' for r in rates['on'])}) | "
            f"{off:.1f} ({', '.join(f'{r:.1f}' for r in rates['off'])}) | {ratio:.3f} | {verdict} |"
        )
    _write(f"wall-cost-{args.sampler}-{args.loop}-{PY}", lines, {"rates": results, "runs": detail})


# -- scale --------------------------------------------------------------------------------------


async def _fanout(url: str, requests: int, tasks: int, hold: float) -> list[str]:
    import httpx

    limits = httpx.Limits(max_connections=requests + 4)
    async with httpx.AsyncClient(base_url=url, timeout=hold * 10 + 60, limits=limits) as client:

        async def one() -> str:
            response = await client.get("/fanout", params={"tasks": tasks, "ms": int(hold * 1000)})
            response.raise_for_status()
            return response.headers["x-span-id"]

        return list(await asyncio.gather(*(one() for _ in range(requests))))


def scale(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for repeat in range(args.repeats):
            for config in ["on", "off"] if repeat % 2 == 0 else ["off", "on"]:
                receiver = _receiver(tmp)
                try:
                    with wall.wall_app(
                        receiver.url,
                        tmp / "app.log",
                        loop=args.loop,
                        **_env(args, config == "on", 1),
                    ) as server:
                        asyncio.run(_fanout(server.url, 2, 10, 0.1))
                        time.sleep(1)
                        _get(server.url + "/lag?reset=1")
                        began = time.monotonic()
                        with ThreadPoolExecutor(1) as pool:
                            fanout = pool.submit(
                                asyncio.run,
                                _fanout(server.url, args.requests, args.tasks, args.hold),
                            )
                            # The steady state: every task created, all suspended.
                            time.sleep(args.hold / 3)
                            _get(server.url + "/lag?reset=1")
                            time.sleep(args.hold / 3)
                            lag = _get(server.url + "/lag")
                            span_ids = fanout.result()
                        took = time.monotonic() - began
                        durations = wall.span_durations(server.url)
                        server.process.send_signal(2)
                        server.process.wait(60)
                    wall.wait_for_uploads(1.0)
                    totals, not_read = _wall_totals(receiver.db_path, set(span_ids))
                finally:
                    receiver.stop()
                coverage = sorted(
                    totals.get(s, 0.0) / durations[s]["duration"]
                    for s in span_ids
                    if s in durations
                )
                run = {
                    "config": config,
                    "seconds": round(took, 2),
                    "lag_max_ms": round(lag["lag_max_ms"], 2),
                    "gc_max_ms": round(lag["gc_max_ms"], 2),
                    "wall": lag["wall"],
                    "coverage_min_pct": round(coverage[0] * 100, 1) if coverage else 0,
                    "coverage_median_pct": round(coverage[len(coverage) // 2] * 100, 1)
                    if coverage
                    else 0,
                    "not_read_pct": round(not_read * 100, 1),
                }
                runs.append(run)
                print(f"round {repeat + 1}: {json.dumps(run)}", file=sys.stderr, flush=True)
    lines = _header(args, "10,000 suspended tasks")
    lines += [
        f"{args.requests} requests at once, each awaiting {args.tasks} child tasks that sleep "
        f"{args.hold:g} s ({args.requests * args.tasks:,} suspended tasks in flight). Loop lag: "
        "the latest wake-up of a 1 ms sleep in the middle third of the hold, once every task is "
        "created and suspended (any stall of the loop: ours, garbage collection, the machine); "
        "GC: the longest collection then. In-process producer (over the whole run, task creation "
        "included): its longest tick on the loop on the clock (preemption of a shared machine and "
        "collections that land in it included), the loop thread's CPU time in its longest tick, "
        "the longest tick's own work (CPU time less the collections that ran in it), its "
        "ticks over 1 ms on the clock, its ticks in which the loop thread was preempted (an "
        "involuntary context switch: another thread or process took the CPU), those in which it "
        "waited (a voluntary one: for the GIL held by another thread, a lock) and the longest "
        "tick on the clock in which it was never switched out. Built-in sampler: the sampler "
        "process's longest read of every task (in another process: the loop never waits for it), "
        "and the share of the requests' wall time under `[waiting: not read]` (requests that "
        "ended between two reads).",
        "",
        "| run | wall | lag max ms | GC max ms | longest tick (clock) / read ms | longest tick CPU ms | longest tick own work ms | ticks over 1 ms | ticks preempted / waited | longest unswitched tick ms | read period ms | coverage min / median % | not read % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for index, run in enumerate(runs, 1):
        stats = run["wall"] or {}
        longest = stats.get("longest_tick_ns") or stats.get("longest_read_ns") or 0
        period = stats.get("read_period_ns", 0)
        lines.append(
            f"| {index} | {run['config']} | {run['lag_max_ms']} | {run['gc_max_ms']} | "
            f"{longest / 1e6:.2f} | {_ms(stats, 'longest_tick_cpu_ns')} | "
            f"{_ms(stats, 'longest_tick_work_ns')} | {stats.get('ticks_over_1ms', '-')} | "
            f"{stats.get('ticks_preempted', '-')} / {stats.get('ticks_waited', '-')} of "
            f"{stats.get('ticks', '-')} | {_ms(stats, 'longest_unswitched_tick_ns')} | "
            f"{period / 1e6:.0f} | "
            f"{run['coverage_min_pct']} / "
            f"{run['coverage_median_pct']} | {run.get('not_read_pct', 0)} |"
        )
    _write(f"wall-scale-{args.sampler}-{args.loop}-{PY}", lines, {"runs": runs})


def _ms(stats: dict[str, Any], key: str) -> str:
    return f"{stats[key] / 1e6:.2f}" if key in stats else "-"


def _wall_totals(db_path: Path, span_ids: set[str]) -> tuple[dict[str, float], float]:
    """Each span's wall seconds, and the share of them under the built-in sampler's
    ``[waiting: not read]`` marker (a span that ended between two reads of every task)."""
    from span_profiles.receiver import ProfileReader, Selection

    totals: dict[str, float] = {}
    not_read = 0.0
    reader = ProfileReader(db_path)
    try:
        for sample in reader.samples(Selection(service="wall-e2e", profile_type="wall")):
            values = sample.label_values("span_id")
            if len(values) == 1 and values[0] in span_ids:
                totals[values[0]] = totals.get(values[0], 0.0) + sample.nanos / 1e9
                if "[waiting: not read]" in sample.functions:
                    not_read += sample.nanos / 1e9
    finally:
        reader.close()
    total = sum(totals.values())
    return totals, not_read / total if total else 0.0


# -- memory -------------------------------------------------------------------------------------


def memory(args: argparse.Namespace) -> None:
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        receiver = _receiver(tmp)
        try:
            with wall.wall_app(
                receiver.url,
                Path(os.environ.get("WALL_APP_LOG", tmp / "app.log")),
                loop=args.loop,
                **_env(args, args.wall == "on"),
            ) as server:
                port = int(server.url.rpartition(":")[2])
                sampler_pid = (_get(server.url + "/lag").get("wall") or {}).get("sampler_pid")
                done = threading.Event()
                began = time.monotonic()
                loads: list[Any] = []

                def drive() -> None:
                    loads.append(
                        run_load(
                            port,
                            lambda e, r: "/load?ms=50",
                            concurrency=args.inflight[0],
                            duration=args.seconds,
                        )
                    )
                    done.set()

                threading.Thread(target=drive, daemon=True).start()
                while not done.wait(0 if not samples else args.every):
                    samples.append(
                        {
                            "t": round(time.monotonic() - began, 1),
                            "app_rss_mib": round(_rss_mib(server.process.pid), 1),
                            "sampler_rss_mib": round(_rss_mib(sampler_pid), 1),
                        }
                    )
                    print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                samples.append(
                    {
                        "t": round(time.monotonic() - began, 1),
                        "app_rss_mib": round(_rss_mib(server.process.pid), 1),
                        "sampler_rss_mib": round(_rss_mib(sampler_pid), 1),
                    }
                )
                stats = _get(server.url + "/lag")
                server.process.send_signal(2)
                server.process.wait(30)
        finally:
            receiver.stop()
    rate = loads[0].rate if loads else 0.0
    lines = _header(args, "memory over a long run")
    lines += [
        f"`/load` at {args.inflight[0]} in flight for {args.seconds:g} s ({rate:.1f} req/s), "
        f"wall profiles {args.wall}, resident memory every {args.every:g} s.",
        "",
        "| t (s) | app RSS MiB | sampler process RSS MiB |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {s['t']} | {s['app_rss_mib']} | {s['sampler_rss_mib'] or '-'} |" for s in samples]
    _write(
        f"wall-memory-{args.sampler}-{args.loop}-{PY}" + ("-off" if args.wall == "off" else ""),
        lines,
        {"samples": samples, "rate": rate, "stats": stats},
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("what", choices=("accuracy", "cost", "scale", "memory"))
    default_sampler = "builtin" if sys.version_info >= (3, 14) else "pyroscope"
    parser.add_argument("--sampler", choices=("pyroscope", "builtin"), default=default_sampler)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="accuracy: rounds per run")
    parser.add_argument("--per-kind", type=int, default=4, help="accuracy: requests per kind")
    parser.add_argument("--ms", type=int, default=200, help="accuracy: each part's wait")
    parser.add_argument("--seconds", type=float, default=10.0, help="cost, memory: load time")
    parser.add_argument("--inflight", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--requests", type=int, default=100, help="scale: requests at once")
    parser.add_argument("--tasks", type=int, default=100, help="scale: tasks per request")
    parser.add_argument("--hold", type=float, default=5.0, help="scale: seconds they sleep")
    parser.add_argument("--every", type=float, default=30.0, help="memory: seconds between reads")
    parser.add_argument(
        "--wall", choices=("on", "off"), default="on", help="memory: the baseline is off"
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.load_at_start = _loadavg()
    {"accuracy": accuracy, "cost": cost, "scale": scale, "memory": memory}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
