"""span-profiles in one run: a real FastAPI app, real traffic, and each request's own CPU profile.

What it does, all on 127.0.0.1 and in a temporary directory:

1. starts the local Pyroscope-compatible receiver in this process (SQLite in a temp dir);
2. starts ``examples/fastapi/app.py`` under a real ``uvicorn`` subprocess, its pyroscope-io agent
   pointed at the receiver with a short upload interval;
3. sends concurrent traffic to every endpoint for a few seconds, reading each response's span id
   from the ``x-span-id`` header;
4. stops uvicorn with SIGINT while one last request is still burning CPU: the agent's shutdown
   must flush that last, partial window;
5. prints each endpoint's top functions (profiles selected by the ``span_name`` label) and a few
   single requests' top functions (by ``span_id``), and checks every request's profile against
   the functions the other endpoints burn in;
6. ends by writing the flame graph of the request that used the most CPU to
   ``span-profiles-demo/top-request.html`` (under the working directory; ``--out-dir`` moves it,
   next to the demo's database ``profiles.db``) and printing the web UI's address. With
   ``--serve`` the receiver and its UI stay up until Ctrl-C; without it, ``span-profiles serve
   --db span-profiles-demo/profiles.db`` shows the same data again.

Exits 1 if no profile arrived (or the server failed), 0 otherwise. ``--json`` prints the same as
JSON. Needs ``pip install -e '.[fastapi,pyroscope,receiver]' uvicorn``; ``scripts/demo.sh`` does
that in a fresh virtualenv. Works from any working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from span_profiles.receiver import ProfileReader, Selection, start_receiver_in_thread
from span_profiles.receiver.query import documents
from span_profiles.receiver.web import pages

APP_DIR = Path(__file__).resolve().parent / "fastapi"
SERVICE = "example-fastapi"

ENDPOINTS: dict[str, tuple[str, str | None]] = {
    # span name (the route template) -> (a path to request, the function it burns in)
    "GET /checkout": ("/checkout", "burn_checkout"),
    "GET /search": ("/search?q=boots", "burn_search"),
    "GET /report": ("/report", "render_report"),
    "GET /items/{item_id}": ("/items/42", None),
}
CHILD_FUNCTIONS = {"GET /checkout": "burn_pricing"}
"""Work that an endpoint's child tasks do: it belongs to that endpoint's spans too."""
MARKERS = {f for _, f in ENDPOINTS.values() if f} | set(CHILD_FUNCTIONS.values())


@dataclass(frozen=True)
class Request:
    """One answered request."""

    span_name: str
    span_id: str
    seconds: float


class Client:
    """GET requests to the app with the standard library, so the demo needs no HTTP client."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout

    def span_id(self, path: str) -> str:
        """GET ``path``; return the ``x-span-id`` response header (errors raise)."""
        with urllib.request.urlopen(self.base_url + path, timeout=self.timeout) as response:
            response.read()
            return str(response.headers["x-span-id"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str, *, quiet: bool) -> None:
    """Progress goes to stderr, so that ``--json`` output stays parseable."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def start_app(port: int, receiver_url: str, upload_interval: int, log_path: Path) -> Any:
    """uvicorn serving the FastAPI example, in its own process group, logging to ``log_path``."""
    env = {
        **os.environ,
        "PYROSCOPE_SERVER_ADDRESS": receiver_url,
        "PYROSCOPE_UPLOAD_INTERVAL": str(upload_interval),
        # Explicit, so that an inherited SPAN_PROFILES_PROFILER=off cannot silence the demo.
        "SPAN_PROFILES_PROFILER": "on",
    }
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(APP_DIR)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log_path.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=APP_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(client: Client, process: Any, timeout: float) -> None:
    """Poll ``/health`` until it answers; fail if the server exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with status {process.returncode}")
        try:
            client.span_id("/health")
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def traffic(client: Client, seconds: float, concurrency: int) -> list[Request]:
    """``concurrency`` clients, each cycling through every endpoint, for ``seconds``."""
    deadline = time.monotonic() + seconds
    names = list(ENDPOINTS)

    def client_loop(offset: int) -> list[Request]:
        done: list[Request] = []
        i = offset
        while time.monotonic() < deadline:
            name = names[i % len(names)]
            i += 1
            started = time.monotonic()
            span_id = client.span_id(ENDPOINTS[name][0])
            done.append(Request(name, span_id, time.monotonic() - started))
        return done

    with ThreadPoolExecutor(concurrency) as pool:
        return [r for batch in pool.map(client_loop, range(concurrency)) for r in batch]


def last_request_across_shutdown(
    client: Client, process: Any, timeout: float
) -> tuple[Request, float, int]:
    """Start one slow request, SIGINT uvicorn while it runs; return it, the signal time, status.

    uvicorn finishes in-flight requests before exiting, and the agent's shutdown (at interpreter
    exit) uploads the window that was still open: this request's last samples are in it.
    """
    result: list[Request] = []

    def slow() -> None:
        started = time.monotonic()
        span_id = client.span_id("/checkout?ms=600")
        result.append(Request("GET /checkout", span_id, time.monotonic() - started))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)  # the request is running (its burn takes 600 ms of CPU)
    signalled_at = time.time()
    process.send_signal(signal.SIGINT)
    thread.join(timeout)
    status = process.wait(timeout)
    if not result:
        raise RuntimeError("the last request got no answer")
    return result[0], signalled_at, status


def endpoint_of(functions: set[str]) -> set[str]:
    """The endpoints whose marker functions occur in ``functions``."""
    owners = set()
    for name, (_, function) in ENDPOINTS.items():
        if function in functions or CHILD_FUNCTIONS.get(name) in functions:
            owners.add(name)
    return owners


def analyse(
    db_path: Path, requests: list[Request], last: Request, signalled_at: float, spans_shown: int
) -> dict[str, Any]:
    """Everything the report prints, from the receiver's database."""
    with ProfileReader(db_path) as reader:
        total = reader.total_count(Selection(service=SERVICE))
        endpoints = {}
        for name in ENDPOINTS:
            endpoints[name] = {
                "requests": sum(1 for r in requests if r.span_name == name),
                "samples": reader.total_count(Selection(span_names=(name,))),
                "top": [
                    {"function": f.name, "self": f.self_count, "total": f.total_count}
                    for f in reader.top(Selection(span_names=(name,)), limit=5)
                ],
            }
        # Check every request: the marker functions in its span profile must be its own.
        checked = own_only = 0
        mixed: list[dict[str, Any]] = []
        per_span: dict[str, dict[str, Any]] = {}
        for request in [*requests, last]:
            functions: Counter[str] = Counter()
            for sample in reader.samples(Selection(span_ids=(request.span_id,))):
                for f in set(sample.functions) & MARKERS:
                    functions[f] += sample.count
            samples = reader.total_count(Selection(span_ids=(request.span_id,)))
            per_span[request.span_id] = {"samples": samples, "markers": dict(functions)}
            if not functions:
                continue
            checked += 1
            # Worker threads keep every CPU, so a job's first or last sample may carry the label
            # of the job next to it on that thread: tolerate one sample or 1 %, like the e2e test.
            foreign = sum(
                n for f, n in functions.items() if endpoint_of({f}) != {request.span_name}
            )
            if endpoint_of(set(functions)) >= {request.span_name} and foreign <= max(
                1, 0.01 * samples
            ):
                own_only += 1
            else:
                mixed.append({"span_id": request.span_id, "span_name": request.span_name})
        # A few single requests of each CPU endpoint: those with the most samples.
        shown = []
        for name, (_, function) in ENDPOINTS.items():
            if function is None:
                continue
            mine = [r for r in requests if r.span_name == name]
            mine.sort(key=lambda r: -per_span[r.span_id]["samples"])
            for request in mine[:spans_shown]:
                shown.append(
                    {
                        "span_id": request.span_id,
                        "span_name": name,
                        "samples": per_span[request.span_id]["samples"],
                        "top": [
                            {"function": f.name, "self": f.self_count, "total": f.total_count}
                            for f in reader.top(Selection(span_ids=(request.span_id,)), limit=3)
                        ],
                    }
                )
        # Samples of the last request that arrived after SIGINT came with the shutdown flush.
        flushed = sum(
            s.count
            for s in reader.samples(Selection(span_ids=(last.span_id,), since=signalled_at))
            if s.received_at >= signalled_at
        )
    return {
        "service": SERVICE,
        "requests": len(requests) + 1,
        "samples": total,
        "endpoints": endpoints,
        "spans": shown,
        "own_code_check": {"spans_checked": checked, "own_only": own_only, "mixed": mixed},
        "last_window": {
            "span_id": last.span_id,
            "samples": per_span[last.span_id]["samples"],
            "samples_after_sigint": flushed,
        },
    }


def write_top_flame(db_path: Path, out: Path) -> dict[str, Any]:
    """Write the flame graph of the request that used the most CPU to ``out``; describe it."""
    with ProfileReader(db_path) as reader:
        top = documents.overview_json(reader, Selection(service=SERVICE), top=1)["top_spans"]
        if not top:
            return {}
        out.write_text(pages.span_html(reader, top[0]["span_id"]), encoding="utf-8")
    return {**top[0], "flame_graph": str(out.resolve())}


def print_report(report: dict[str, Any]) -> None:
    """The report as readable text."""
    print(
        f"\nservice {report['service']}: {report['requests']} requests, "
        f"{report['samples']} CPU samples (10 ms each) received\n"
    )
    print("Per endpoint (all requests' samples, selected by the span_name label):")
    for name, data in report["endpoints"].items():
        print(f"  {name}  ({data['requests']} requests, {data['samples']} samples)")
        if not data["top"]:
            print("      (no CPU samples: this endpoint does next to no work)")
        for f in data["top"]:
            print(f"      {f['self']:5d} self {f['total']:5d} total  {f['function']}")
    print("\nSingle requests (one span each, selected by its span_id label):")
    for span in report["spans"]:
        print(f"  span {span['span_id']}  {span['span_name']}  ({span['samples']} samples)")
        for f in span["top"]:
            print(f"      {f['self']:5d} self {f['total']:5d} total  {f['function']}")
    check = report["own_code_check"]
    print(
        f"\nOwn code only: {check['own_only']} of {check['spans_checked']} profiled requests hold "
        "their own endpoint's functions and none of another endpoint's."
    )
    for span in check["mixed"]:
        print(f"  mixed: span {span['span_id']} ({span['span_name']})")
    last = report["last_window"]
    print(
        f"Shutdown flush: the request in flight at SIGINT (span {last['span_id']}) has "
        f"{last['samples']} samples, {last['samples_after_sigint']} of them uploaded after the "
        "signal, by the agent's shutdown."
    )
    print("\nTry it yourself: `span-profiles serve` and `uvicorn app:app` in examples/fastapi;")
    print("then `span-profiles spans` and `span-profiles top --span-id <x-span-id header>`.")
    top = report["top_cpu_request"]
    if top:
        print(
            f"\nThe request that used the most CPU: span {top['span_id']} ({top['span_name']},"
            f" {top['cpu_seconds']:.2f} CPU s, {top['samples']} samples)."
        )
        print(f"Its flame graph (opens offline in a browser): {top['flame_graph']}")
    ui_state = report["ui"]
    if ui_state["serving"]:
        print(f"Web UI: {ui_state['url']}  (up until Ctrl-C)")
    else:
        print(
            f"Web UI: {ui_state['url']}  (stopped with the demo; see it again with"
            f" `span-profiles serve --db {ui_state['db']}`, then http://127.0.0.1:4040/,"
            " or run the demo with --serve)"
        )


def serve_until_interrupted(receiver: Any) -> None:
    """Keep the receiver (and its web UI) up until Ctrl-C or SIGTERM."""
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seconds", type=float, default=8.0, help="traffic duration (8)")
    parser.add_argument("--concurrency", type=int, default=12, help="concurrent clients (12)")
    parser.add_argument("--upload-interval", type=int, default=2, help="agent push period (2 s)")
    parser.add_argument("--spans", type=int, default=2, help="single requests shown per endpoint")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("span-profiles-demo"),
        help="where the database and the flame graph go (span-profiles-demo)",
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep the receiver and its web UI up (Ctrl-C ends)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="receiver and UI port (4040 with --serve, else any)"
    )
    args = parser.parse_args(argv)
    quiet = args.json
    port = args.port if args.port is not None else 4040 if args.serve else 0

    args.out_dir.mkdir(parents=True, exist_ok=True)
    db_path = args.out_dir / "profiles.db"
    # A fresh database per run, so that the report counts this run's requests only.
    for stale in (
        db_path,
        db_path.with_name("profiles.db-wal"),
        db_path.with_name("profiles.db-shm"),
    ):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="span-profiles-demo-") as tmp:
        receiver = start_receiver_in_thread(port=port, db_path=db_path)
        app_port = free_port()
        log(f"receiver on {receiver.url}; starting uvicorn on port {app_port}", quiet=quiet)
        process = start_app(app_port, receiver.url, args.upload_interval, Path(tmp) / "uvicorn.log")
        try:
            client = Client(f"http://127.0.0.1:{app_port}", timeout=30)
            wait_ready(client, process, timeout=30)
            log(
                f"sending {args.seconds:.0f} s of traffic with {args.concurrency} clients",
                quiet=quiet,
            )
            requests = traffic(client, args.seconds, args.concurrency)
            log("stopping uvicorn (SIGINT) with one request in flight", quiet=quiet)
            last, signalled_at, status = last_request_across_shutdown(client, process, 20)
        except Exception as exc:
            receiver.stop()
            print(f"demo failed: {exc}", file=sys.stderr)
            print((Path(tmp) / "uvicorn.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        except BaseException:
            receiver.stop()
            raise
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if status != 0:
            print(f"uvicorn exited with status {status}", file=sys.stderr)
        report = analyse(db_path, requests, last, signalled_at, args.spans)
        report["top_cpu_request"] = write_top_flame(db_path, args.out_dir / "top-request.html")
        report["ui"] = {
            "url": receiver.url + "/",
            "serving": args.serve,
            "db": str(db_path.resolve()),
        }
        if not args.serve:
            receiver.stop()

    if args.json:
        print(json.dumps(report, indent=2), flush=True)
    else:
        print_report(report)
    if args.serve:
        serve_until_interrupted(receiver)
    if report["samples"] == 0:
        print("no profile arrived: is pyroscope-io installed in this environment?", file=sys.stderr)
        return 1
    if report["last_window"]["samples_after_sigint"] == 0:
        print("warning: nothing arrived after SIGINT; the last window was lost", file=sys.stderr)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
