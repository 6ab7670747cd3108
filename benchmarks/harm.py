"""Do no harm: the same app with and without span-profiles, as ratios (real uvicorn, real agent).

Three configurations of one Starlette app: ``span-profiles`` (its middleware, default settings),
``agent`` (what a user runs before adding span-profiles: OpenTelemetry's ASGI middleware and the
pyroscope-io agent configured as its README does) and ``none`` (neither). The goals are met against ``agent``, since
that is the same app without span-profiles; the ratio against ``none`` shows what profiling
costs in all.

Run: ``python benchmarks/harm.py`` (about 3 minutes; ``--seconds``/``--repeats`` to change).
Prints three results and writes ``benchmarks/results/harm.md`` and ``.json``:

1. **GIL-releasing work in worker threads**: ``/hash`` runs PBKDF2-SHA256 in ``anyio.to_thread``
   (what Starlette/FastAPI sync endpoints and ``run_in_threadpool`` do), 8 concurrent clients.
   Goal: span-profiles ≥ 0.95 of the app without it.
2. **CPU-bound async requests under a hog on the loop's CPU**: a separate process spins on the
   CPU the server's loop thread is on (pinned there with span-profiles, where the kernel put it
   without), while 4 clients request ``/cpu`` (5 ms of pure Python on the loop). The rate is
   measured from the moment the hog starts, so the time placement takes to move away counts;
   the placement is polled every 0.25 s to time the move. Goal ≥ 0.90.
3. **Worker-thread affinity**: ``/threads`` starts a thread of every kind from the (pinned) loop
   thread and reports its CPU mask. Goal: every one on the process's full mask.

The two configurations are interleaved (the order alternates each repeat) and the median of the
repeats is reported with every run. The client keeps off no CPU: on a small machine it shares
the CPUs with the server, equally for both configurations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._workload.harness import Server, _get_once, run_load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
APP = "benchmarks._workload.harm_app:app"
MODES = ("none", "agent", "span-profiles")
HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def _get_json(port: int, path: str) -> Any:
    status, _, body = asyncio.run(_get_once(port, path))
    if status != 200:
        raise RuntimeError(f"{path} answered {status}")
    return json.loads(body)


SAMPLER = "auto"
"""``--sampler``: the span-profiles configuration's sampler (``SPAN_PROFILES_SAMPLER``)."""


def _server(mode: str, log: Path) -> Server:
    env = {
        "HARM_MODE": mode,
        "SPAN_PROFILES_SAMPLER": SAMPLER,
        "PYROSCOPE_SERVER_ADDRESS": "http://127.0.0.1:9",  # refused at once: nothing to store
        "OTEL_SERVICE_NAME": "harm",
    }
    server = Server(env, app=APP).start(log)
    for _ in range(5):  # the lazy start (instrument, agent, pin) happens on the first request
        asyncio.run(_get_once(server.port, "/cpu"))
    return server


def _hash_rate(server: Server, seconds: float) -> float:
    return run_load(server.port, lambda e, r: "/hash", concurrency=8, duration=seconds).rate


def _hog_rate(server: Server, seconds: float) -> tuple[float, int, float | None]:
    where = _get_json(server.port, "/where")
    cpu = where["pinned_cpu"] if where.get("pinned_cpu") is not None else where["loop_cpu"]
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(cpu)])
    started = time.monotonic()
    escaped: list[float] = []
    done = threading.Event()

    def watch_placement() -> None:
        # Four light requests a second: when did the pinned loop leave the hogged CPU?
        while not done.wait(0.25):
            if _get_json(server.port, "/where").get("pinned_cpu") not in (None, cpu):
                escaped.append(time.monotonic() - started)
                return

    watcher = threading.Thread(target=watch_placement, daemon=True)
    if where.get("pinned_cpu") is not None:
        watcher.start()
    try:
        load = run_load(server.port, lambda e, r: "/cpu", concurrency=4, duration=seconds)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        hog.kill()
        hog.wait()
    return load.rate, cpu, (escaped[0] if escaped else None)


def main() -> int:
    """Run the interleaved configurations, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (>= 3)")
    parser.add_argument(
        "--sampler",
        choices=["auto", "pyroscope", "builtin"],
        default="auto",
        help="the span-profiles configuration's sampler (builtin: CPython 3.14+; nothing is "
        "pinned and no worker thread waits)",
    )
    args = parser.parse_args()
    global SAMPLER
    SAMPLER = args.sampler
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        print("harm.py needs Linux and two usable CPUs", file=sys.stderr)
        return 2
    full = sorted(os.sched_getaffinity(0))
    runs: dict[str, dict[str, list[float]]] = {m: {"hash": [], "hog": []} for m in MODES}
    threads: dict[str, Any] = {}
    escapes: list[float | None] = []
    logs = Path(tempfile.mkdtemp(prefix="harm-"))
    for repeat in range(args.repeats):
        # Rotated each repeat: every configuration runs first, middle and last in turn.
        order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
        for mode in order:
            with _server(mode, logs / f"{mode}-{repeat}.log") as server:
                runs[mode]["hash"].append(_hash_rate(server, args.seconds))
                rate, _, escaped = _hog_rate(server, args.seconds)
                runs[mode]["hog"].append(rate)
                if mode == "span-profiles":
                    escapes.append(escaped)
                    threads = _get_json(server.port, "/threads")
                server.stop()
            print(
                f"run {repeat + 1} {mode:<13} hash {runs[mode]['hash'][-1]:7.1f}/s  "
                f"hog {runs[mode]['hog'][-1]:7.1f}/s",
                flush=True,
            )
    medians = {m: {k: statistics.median(v) for k, v in runs[m].items()} for m in MODES}
    hash_ratio = medians["span-profiles"]["hash"] / medians["agent"]["hash"]
    hog_ratio = medians["span-profiles"]["hog"] / medians["agent"]["hog"]
    total = {k: medians["span-profiles"][k] / medians["none"][k] for k in ("hash", "hog")}
    loop_mask = threads.pop("loop", None)
    on_full = {kind: mask == full for kind, mask in threads.items()}
    lines = [
        "# Do no harm: span-profiles against the same app without it",
        "",
        f"`python benchmarks/harm.py --seconds {args.seconds:g} --repeats {args.repeats} "
        f"--sampler {args.sampler}`; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}",
        "",
        "| measurement | none | agent | span-profiles | ratio to agent | goal | ratio to none |",
        "|---|---|---|---|---|---|---|",
        f"| PBKDF2 in anyio.to_thread, req/s | {medians['none']['hash']:.1f} | "
        f"{medians['agent']['hash']:.1f} | "
        f"{medians['span-profiles']['hash']:.1f} | {hash_ratio:.3f} | ≥ 0.95 "
        f"{'met' if hash_ratio >= 0.95 else 'MISSED'} | {total['hash']:.3f} |",
        f"| CPU-bound async under a hog on the loop's CPU, req/s | {medians['none']['hog']:.1f} | "
        f"{medians['agent']['hog']:.1f} | "
        f"{medians['span-profiles']['hog']:.1f} | {hog_ratio:.3f} | ≥ 0.90 "
        f"{'met' if hog_ratio >= 0.90 else 'MISSED'} | {total['hog']:.3f} |",
        "",
        "Every run (req/s): "
        + "; ".join(
            f"{m} hash {', '.join(f'{x:.1f}' for x in runs[m]['hash'])} / "
            f"hog {', '.join(f'{x:.1f}' for x in runs[m]['hog'])}"
            for m in MODES
        ),
        "",
        "Seconds from hog start until the pinned loop had moved (polled every 0.25 s; None: "
        f"had not moved by the end of the load): {[None if e is None else round(e, 2) for e in escapes]}",
        "",
        f"Worker threads started by the pinned loop thread (loop thread: {loop_mask}; "
        f"full mask: {full}):",
        "",
        "| thread kind | mask | full mask |",
        "|---|---|---|",
        *(f"| {kind} | {threads[kind]} | {'yes' if on_full[kind] else 'NO'} |" for kind in threads),
        "",
        f"Worker threads on the full mask: {'all' if all(on_full.values()) else 'NOT ALL'}",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = (
        "harm"
        if args.sampler == "auto"
        else f"harm-{args.sampler}-py{sys.version_info.major}{sys.version_info.minor}"
    )
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "runs": runs,
                "medians": medians,
                "ratios_to_agent": {"hash": hash_ratio, "hog": hog_ratio},
                "ratios_to_none": total,
                "escape_seconds": escapes,
                "threads": threads,
                "full_mask": full,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if hash_ratio >= 0.95 and hog_ratio >= 0.90 and all(on_full.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
