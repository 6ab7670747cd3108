"""What the agent's ``gil_only`` option changes, measured with the real agent.

Run: ``python benchmarks/agent_options.py`` (about 1 minute). One child process per setting and
repeat (interleaved) runs a "login request": a root span whose worker thread runs
``hashlib.scrypt`` (native code that releases the GIL, like Werkzeug's password hashing, bcrypt,
zlib, numpy) and then some pure Python, while 20 idle threads wait. A capture server on
127.0.0.1 answers every push and keeps its body. Printed per setting (median of the runs):

- **scrypt samples in the span**: samples whose stack holds the scrypt call and whose ``span_id``
  is the span's, and of all scrypt samples (fidelity: 100 % means the span shows its native work);
- **agent CPU per sample**: CPU time of the agent's native threads divided by samples taken;
- **upload bytes per second of profile** (gzip'd push bodies).

``--report-thread-name`` turns on the agent's ``report_thread_name`` (py-spy then looks up each
thread's name), to see what that costs per sample on each Python.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from span_profiles.receiver.ingest.decode import decode_push_request, gunzip  # noqa: E402

CHILD = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading, time
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    import span_profiles
    from span_profiles import _profiler

    provider = TracerProvider(resource=Resource.create({"service.name": "options"}))
    span_profiles.instrument(tracer_provider=provider)
    assert span_profiles.start_profiler(
        tracer_provider=provider, server_address=sys.argv[1], upload_interval=1,
        gil_only=sys.argv[2] == "true", pin_cpu="off",
        report_thread_name=os.environ.get("BENCH_REPORT_THREAD_NAME") == "true")
    stop = threading.Event()
    idle = [threading.Thread(target=stop.wait) for _ in range(int(os.environ.get("IDLE_THREADS", "20")))]
    for t in idle: t.start()
    tracer = provider.get_tracer("bench")

    def python_work(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    def login():
        hashlib.scrypt(b"password", salt=b"salt" * 4, n=2**14, r=8, p=1, maxmem=64 << 20)

    with tracer.start_as_current_span("POST /login") as span:
        span_id = format(span.get_span_context().span_id, "016x")
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                pool.submit(login).result()
        python_work(0.5)
    stop.set()
    for t in idle: t.join()
    agent = sorted(_profiler.agent_thread_ids())
    run_ns = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in agent or int(tid) not in {t.native_id for t in threading.enumerate()}:
            try:
                run_ns += int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
            except OSError:
                pass
    print(json.dumps({"span_id": span_id, "agent_run_ns": run_ns}), flush=True)
    span_profiles.stop_profiler()
    """
)


class Capture(http.server.BaseHTTPRequestHandler):
    """Answers every push with 200 and keeps the body."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        Capture.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/proto")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def _samples(bodies: list[bytes], span_id: str) -> tuple[int, int, int]:
    """(scrypt samples in the span, scrypt samples, all samples)."""
    in_span = scrypt = total = 0
    for body in bodies:
        raw = gunzip(body) if body[:2] == b"\x1f\x8b" else body
        for series in decode_push_request(raw):
            for profile in series.profiles:
                for sample in profile.samples:
                    count = sample.values[0] // max(profile.period, 1)
                    total += count
                    if any(f.endswith("login") for f in sample.functions):
                        scrypt += count
                        if ("span_id", span_id) in sample.labels:
                            in_span += count
    return in_span, scrypt, total


def main() -> int:
    """Run both settings interleaved and print the medians with every run."""
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--report-thread-name",
        action="store_true",
        help="the agent labels samples with thread names",
    )
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    results: dict[str, list[dict[str, float]]] = {"true": [], "false": []}
    for repeat in range(args.repeats):
        for gil_only in ("true", "false") if repeat % 2 == 0 else ("false", "true"):
            Capture.bodies = []
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PYROSCOPE_", "SPAN_"))}
            env["PYTHONPATH"] = str(ROOT)
            env["BENCH_REPORT_THREAD_NAME"] = "true" if args.report_thread_name else "false"
            done = subprocess.run(
                [sys.executable, "-c", CHILD, url, gil_only],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            info = json.loads(done.stdout.splitlines()[-1])
            in_span, scrypt, total = _samples(Capture.bodies, info["span_id"])
            upload = sum(len(b) for b in Capture.bodies)
            run = {
                "scrypt_in_span": in_span,
                "scrypt": scrypt,
                "samples": total,
                "agent_us_per_sample": info["agent_run_ns"] / 1000 / max(total, 1),
                "upload_bytes": upload,
                "bytes_per_sample": upload / max(total, 1),
            }
            results[gil_only].append(run)
            print(f"run {repeat + 1} gil_only={gil_only}: {run}", flush=True)
    print()
    print("| gil_only | scrypt samples in the span / all scrypt samples | samples | "
          "agent CPU µs per sample | upload bytes | bytes per sample |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for setting, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {setting} | {med['scrypt_in_span']:.0f} / {med['scrypt']:.0f} | "
            f"{med['samples']:.0f} | {med['agent_us_per_sample']:.1f} | "
            f"{med['upload_bytes']:.0f} | {med['bytes_per_sample']:.1f} |"
        )
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
