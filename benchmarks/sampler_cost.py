"""What each sampler costs the app, and itself: CPU per request, the sampler's CPU, memory.

Run: ``python benchmarks/sampler_cost.py`` (CPython 3.14+; about 8 minutes with the defaults).
Prints tables and writes ``benchmarks/results/sampler_cost-py3XX.md`` and ``.json``.

The fidelity benchmark's Starlette app under a real uvicorn (uvloop), 8 concurrent clients,
requests of ``--shape`` (default: 10 slices of 2 ms of CPU time with ``await asyncio.sleep(0)``
between them, "2 ms steps"; ``tiny``: one empty step, to see the per-request overhead in µs).
Slices burn CPU time, not wall time: a wall-clock slice gets less CPU on a busy machine. Configurations,
each a fresh server, interleaved in rotating order for ``--repeats`` rounds:

* ``plain``: no tracing, no profiler;
* ``otel``: OpenTelemetry's ASGI middleware, no profiler (the cost goal's baseline);
* ``hooks``: + span-profiles' hooks for the built-in sampler, no events written;
* ``labels``: + the label events written into a ring that no sampler reads;
* ``builtin``: + the built-in sampler (100 Hz);
* ``pyroscope``: span-profiles with pyroscope-io (per-step labels, pinned loop, gate), when
  pyroscope-io is installed;
* ``agent``: pyroscope-io without labels, when installed.

App CPU per request: the server process's user+system CPU over the load, over the requests it
served; pyroscope-io's threads run inside the app, so their CPU is taken out (and reported as
the sampler's). The sampler's CPU: the built-in sampler's process, or the agent's threads, as a
share of one CPU over the load. RSS: the app's and the sampler process's resident memory at the
end. ``--threads 20`` adds 20 worker threads to the app, each busy 1 ms in every 10 ms (both
CPUs then busy), ``--idle-threads 20`` 20 threads that only wait: the sampler's cost with many
threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._workload.harness import Server, _get_once, run_load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CLK = os.sysconf("SC_CLK_TCK")

SHAPES = {"2ms": "slice_us=2000&n=10&clock=cpu", "tiny": "slice_us=0&n=1&clock=cpu"}

CONFIGS: dict[str, dict[str, str]] = {
    "plain": {"SP_BENCH_OTEL": "off", "SP_BENCH_LABELS": "none", "SP_BENCH_PROFILER": "off"},
    "otel": {"SP_BENCH_LABELS": "none", "SP_BENCH_PROFILER": "off"},
    "hooks": {
        "SP_BENCH_LABELS": "ours",
        "SP_BENCH_PROFILER": "off",
        "SPAN_PROFILES_SAMPLER": "builtin",
    },
    "labels": {
        "SP_BENCH_LABELS": "ours",
        "SP_BENCH_EVENTS_ONLY": "1",
        "SPAN_PROFILES_SAMPLER": "builtin",
    },
    "builtin": {"SP_BENCH_LABELS": "ours", "SPAN_PROFILES_SAMPLER": "builtin"},
    "pyroscope": {"SP_BENCH_LABELS": "ours", "SPAN_PROFILES_SAMPLER": "pyroscope"},
    "agent": {"SP_BENCH_LABELS": "none", "SPAN_PROFILES_SAMPLER": "pyroscope"},
}


def _ticks(path: str) -> int:
    """utime + stime of a /proc stat file, in clock ticks."""
    with open(path) as file:
        fields = file.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _info(server: Server) -> dict[str, Any]:
    import asyncio

    status, _, body = asyncio.run(_get_once(server.port, "/_profiler"))
    return json.loads(body) if status == 200 else {}


def _cpu(pid: int, threads: list[int], child: int | None) -> tuple[float, float]:
    """(app CPU s without the agent's threads, sampler CPU s)."""
    total = _ticks(f"/proc/{pid}/stat")
    agent = 0
    for tid in threads:
        with contextlib.suppress(OSError):
            agent += _ticks(f"/proc/{pid}/task/{tid}/stat")
    sampler = agent
    if child is not None:
        try:
            sampler = _ticks(f"/proc/{child}/stat")
        except OSError:
            sampler = 0
    return (total - agent) / CLK, sampler / CLK


def measure(
    config: str, query: str, seconds: float, workdir: Path, extra: dict[str, str]
) -> dict[str, float]:
    """One fresh server of ``config`` under load; CPU, rate and memory."""
    env = {
        "PYROSCOPE_SERVER_ADDRESS": os.environ.get("SP_BENCH_RECEIVER", "http://127.0.0.1:9"),
        "OTEL_SERVICE_NAME": f"cost-{config}",
        "SPAN_PROFILES_PIN_CPU": "auto",
        **CONFIGS[config],
        **extra,
    }
    server = Server(env, loop="auto")
    try:
        server.start(workdir / f"{config}.log")

        def path(endpoint: str, rid: int) -> str:
            return f"/slices/{endpoint}?{query}"

        run_load(server.port, path, duration=1.0, unique=False, concurrency=8)
        info = _info(server)
        pid = server.process.pid if server.process is not None else 0
        threads = list(info.get("agent_threads", []))
        child = info.get("sampler_pid")
        app0, sampler0 = _cpu(pid, threads, child)
        began = time.monotonic()
        load = run_load(server.port, path, duration=seconds, unique=False, concurrency=8)
        wall = time.monotonic() - began
        app1, sampler1 = _cpu(pid, threads, child)
        result = {
            "rate": load.rate,
            "app_ms_per_request": 1000 * (app1 - app0) / max(len(load.requests), 1),
            "sampler_cpu_share": (sampler1 - sampler0) / wall,
            "app_rss_mib": _rss_kib(pid) / 1024,
            "sampler_rss_mib": _rss_kib(child) / 1024 if child else 0.0,
        }
        server.stop()
        return result
    finally:
        server.kill()


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="2ms")
    parser.add_argument("--threads", type=int, default=0, help="busy worker threads in the app")
    parser.add_argument("--idle-threads", type=int, default=0, help="waiting threads in the app")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS))
    args = parser.parse_args(argv)
    import importlib.util

    names = args.only or [
        c
        for c in CONFIGS
        if importlib.util.find_spec("pyroscope") is not None or c not in ("pyroscope", "agent")
    ]
    extra = {
        "SP_BENCH_THREADS": str(args.threads),
        "SP_BENCH_IDLE_THREADS": str(args.idle_threads),
    }
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for config in order:
                runs[config].append(
                    measure(config, SHAPES[args.shape], args.seconds, Path(tmp), extra)
                )
                last = runs[config][-1]
                print(
                    f"round {repeat + 1} {config:<10} {last['rate']:7.1f} req/s  "
                    f"{last['app_ms_per_request']:.3f} ms/req  "
                    f"sampler {100 * last['sampler_cpu_share']:.2f} %",
                    file=sys.stderr,
                    flush=True,
                )
    median = {c: {k: statistics.median(r[k] for r in runs[c]) for k in runs[c][0]} for c in names}
    base = median.get("otel", {}).get("app_ms_per_request")
    lines = [
        "# Sampler cost",
        "",
        f"`python benchmarks/sampler_cost.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
        f" — {time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, shape {args.shape} ({SHAPES[args.shape]}), "
        f"{args.threads} extra busy threads, {args.idle_threads} waiting threads, "
        f"{args.seconds:g} s per run, medians of "
        f"{args.repeats} interleaved rounds. Shared machine: other sessions were running.",
        "",
        "| configuration | app CPU ms / request (runs) | vs otel | req/s | sampler CPU (share of one CPU) | app RSS MiB | sampler RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for config in names:
        m = median[config]
        cells = ", ".join(f"{r['app_ms_per_request']:.3f}" for r in runs[config])
        versus = f"{100 * (m['app_ms_per_request'] / base - 1):+.1f} %" if base else "-"
        lines.append(
            f"| {config} | {m['app_ms_per_request']:.3f} ({cells}) | {versus} | "
            f"{m['rate']:.1f} | {100 * m['sampler_cpu_share']:.2f} % | "
            f"{m['app_rss_mib']:.1f} | {m['sampler_rss_mib']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = (
        f"sampler_cost-{args.shape}-t{args.threads}-i{args.idle_threads}"
        f"-py{sys.version_info.major}{sys.version_info.minor}"
    )
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"runs": runs, "median": median}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
