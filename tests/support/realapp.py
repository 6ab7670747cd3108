"""Run the real app (``tests/support/apps/realapp.py``) under load and judge every sample by its stack.

Shared by ``tests/e2e/test_realapp_e2e.py`` (short runs, bounds) and ``benchmarks/realapp.py``
(long runs, repeats, the report). One run (:func:`run`): uvicorn on uvloop or the stdlib loop with
a real sampler (pyroscope-io or the built-in one, the run's ``sampler``) pushing to a receiver,
``clients`` keep-alive connections sending the endpoint mix (:data:`MIX`) for ``seconds``, a clean
stop (the sampler flushes at exit), then :func:`judge`.

**Judging a sample.** Its stack says whose work it is (:func:`classify`): a frame of one endpoint
(``realapp.owner_of``) makes it that endpoint's *own* work, either in the request's task (uvicorn's
``run_asgi`` is on the stack) or in a *driver callback* (the endpoint's row decoder, run by the
loop inside asyncpg's ``data_received``, no task on the stack). Samples with no endpoint frame are
*framework* (in some request's task: middleware, routing, serialization, tracing), *server*
(uvicorn's protocol callbacks: parsing before a request's task exists), *driver-other* (asyncpg or
SQLAlchemy code outside any task) or *loop* (the loop's own frames, and the Cython work under
them that py-spy cannot see, asyncpg's native row decoding included). Its ``span_id`` labels say
which request's profile it is in: each response's ``x-span-id`` maps span ids to endpoints.

Per endpoint: **held** = share of its own samples labelled with exactly one span of that endpoint;
**foreign** = share of the samples in its spans (its profile) whose stack is another endpoint's;
**unlabelled** = share of its own samples with no ``span_id``. Globally: samples whose
``span_name`` is a bare method (``GET``, ``POST``...), and the driver callbacks' split into right
(a span of the decoder's endpoint), foreign (another span) and none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from span_profiles.receiver import ProfileReader, Receiver, Selection
from tests.support.apps import realapp
from tests.support.servers import ROOT, agent_env, serving

__all__ = [
    "BARE_METHODS",
    "MIX",
    "Config",
    "EndpointStats",
    "Judgement",
    "Load",
    "classify",
    "fastapi_has_telemetry",
    "goals",
    "judge",
    "run",
]

MIX: tuple[tuple[str, int], ...] = (
    ("health", 3),
    ("live", 3),
    ("list_items", 3),
    ("get_item", 4),
    ("create_item", 2),
    ("update_item", 2),
    ("many_rows", 1),
)
"""Endpoints and their weights in the request mix."""

BARE_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HTTP", "WS", "WEBSOCKET"}
)
"""``span_name`` values that name a method and no route."""

SAMPLE_MS = 10.0
"""Milliseconds of CPU per sample (both samplers take 100 a second: ``sample_rate``'s default)."""


def fastapi_has_telemetry() -> bool:
    """Whether the installed FastAPI has built-in telemetry (``FastAPI(telemetry=...)``)."""
    import inspect

    from fastapi import FastAPI

    return "telemetry" in inspect.signature(FastAPI.__init__).parameters


@dataclass(frozen=True)
class Config:
    """One server configuration."""

    loop: str
    """``uvloop`` or ``asyncio`` (uvicorn's ``--loop``)."""
    mode: str = "spans"
    """``spans`` (``instrument_app``) or ``agent`` (the agent alone: the baseline)."""
    telemetry: str = "off"
    """FastAPI's built-in telemetry: ``off``, ``on``, or ``operations`` (with operation spans)."""

    @property
    def key(self) -> str:
        """A short name, e.g. ``uvloop/spans+telemetry``."""
        extra = {"off": "", "on": "+telemetry", "operations": "+telemetry+operations"}
        return f"{self.loop}/{self.mode}{extra[self.telemetry]}"


# -- the load -----------------------------------------------------------------------------------


def request_for(endpoint: str, rng: random.Random) -> tuple[str, str, bytes | None]:
    """Method, path and JSON body of one request to ``endpoint``."""
    item = rng.randint(1, realapp.SEED_ROWS)
    colour = rng.choice(("red", "green", "blue", "black"))
    body = {"name": f"item {rng.randrange(10**6)}", "price": rng.randint(1, 9999) / 100}
    if endpoint == "health":
        return "GET", "/health", None
    if endpoint == "live":
        return "GET", "/live", None
    if endpoint == "list_items":
        return "GET", "/items", None
    if endpoint == "get_item":
        return "GET", f"/items/{item}", None
    if endpoint == "create_item":
        return "POST", "/items", json.dumps({**body, "colour": colour}).encode()
    if endpoint == "update_item":
        return "PUT", f"/items/{item}", json.dumps(body).encode()
    if endpoint == "many_rows":
        return "GET", "/items/export", None
    raise ValueError(f"unknown endpoint {endpoint!r}")


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough HTTP to cost the load client little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to ``127.0.0.1:port``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, str]]:
        """Send one request, read the whole response; return its status and headers."""
        head = f"{method} {path} HTTP/1.1\r\nhost: realapp\r\n"
        if body is not None:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


@dataclass
class Load:
    """What one load run did."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    """``(endpoint, x-span-id)`` of every completed request (``""`` without the header)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Non-200 responses per ``endpoint status``."""
    seconds: float = 0.0


async def _drive(port: int, clients: int, seconds: float, seed: int) -> Load:
    load = Load()
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        connection = await Connection.open(port)
        try:
            while time.perf_counter() < stop_at:
                endpoint = rng.choices(names, weights)[0]
                status, headers = await connection.request(*request_for(endpoint, rng))
                if status != 200:
                    load.errors[f"{endpoint} {status}"] += 1
                    continue
                load.requests.append((endpoint, headers.get("x-span-id", "")))
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), seconds + 60)
    load.seconds = time.perf_counter() - started
    return load


def drive(
    port: int, *, clients: int, seconds: float, seed: int = 1, avoid_cpu: int | None = None
) -> Load:
    """``clients`` connections send the mix for ``seconds`` (off ``avoid_cpu`` meanwhile)."""
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if mask is not None and avoid_cpu is not None and mask - {avoid_cpu}:
        os.sched_setaffinity(0, mask - {avoid_cpu})
    try:
        return asyncio.run(_drive(port, clients, seconds, seed))
    finally:
        if mask is not None and avoid_cpu is not None:
            os.sched_setaffinity(0, mask)


async def _probe(port: int, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await Connection.open(port)
            try:
                status, headers = await asyncio.wait_for(connection.request("GET", "/live"), 10)
            finally:
                connection.close()
            if status == 200:
                return "live", headers.get("x-span-id", "")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app did not answer GET /live within {timeout} s")
        await asyncio.sleep(0.1)


# -- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A run's load and judgement."""

    config: Config
    service: str
    load: Load
    judgement: Judgement
    placement: str
    sampler: str
    """The app's ``sampler`` setting (``SPAN_PROFILES_SAMPLER``)."""
    log: Path
    """The app's output (uvicorn's and span-profiles' warnings, the start-up line)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "config": asdict(self.config),
            "key": self.config.key,
            "service": self.service,
            "sampler": self.sampler,
            "requests": len(self.load.requests),
            "requests_per_endpoint": dict(Counter(e for e, _ in self.load.requests)),
            "errors": dict(self.load.errors),
            "seconds": round(self.load.seconds, 2),
            "rate": round(len(self.load.requests) / self.load.seconds, 1)
            if self.load.seconds
            else 0.0,
            "placement": self.placement,
            "judgement": self.judgement.as_dict(),
        }


@contextlib.contextmanager
def _server(
    config: Config, database_url: str, receiver: Receiver, service: str, sampler: str, log: Path
) -> Iterator[tuple[Any, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        # The caller's span-profiles settings reach the app, but for the profiler switch (the
        # suite sets PROFILER=off) and the sampler, which is the run's own.
        passed = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("SPAN_PROFILES_")
            and k not in ("SPAN_PROFILES_PROFILER", "SPAN_PROFILES_SAMPLER")
        }
        env = agent_env(
            REALAPP_DATABASE_URL=database_url,
            REALAPP_MODE=config.mode,
            REALAPP_TELEMETRY=config.telemetry,
            REALAPP_SERVICE=service,
            PYROSCOPE_SERVER_ADDRESS=receiver.url,
            PYROSCOPE_UPLOAD_INTERVAL="5",
            # The tests' packages, after the caller's path: a run from a checkout with
            # PYTHONPATH=src serves that checkout's library, not the one installed in the venv.
            PYTHONPATH=os.pathsep.join(filter(None, (os.environ.get("PYTHONPATH"), str(ROOT)))),
            SPAN_PROFILES_SAMPLER=sampler,
            **passed,
        )
        argv = [
            *(
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.support.apps.realapp:create_app",
            ),
            *("--fd", str(sock.fileno()), "--loop", config.loop),
            *("--no-access-log", "--log-level", "warning"),
        ]
        with serving(argv, port=port, env=env, log=log, pass_fds=[sock.fileno()]) as server:
            sock.close()  # uvicorn has its own copy
            yield server, port


def run(
    config: Config,
    database_url: str,
    receiver: Receiver,
    *,
    seconds: float,
    clients: int = 12,
    workdir: Path,
    seed: int = 1,
    sampler: str | None = None,
) -> RunResult:
    """Serve the app in ``config``, send the mix, stop the server cleanly, judge its samples.

    ``sampler`` is the app's ``sampler`` setting (``auto``, ``pyroscope`` or ``builtin``); by
    default the caller's ``SPAN_PROFILES_SAMPLER``, else ``pyroscope``. The ``agent`` baseline
    runs pyroscope-io alone whatever it says.
    """
    if sampler is None:
        sampler = os.environ.get("SPAN_PROFILES_SAMPLER", "pyroscope")
    service = f"realapp-{config.key.replace('/', '-').replace('+', '-')}-{time.time_ns()}"
    log = workdir / f"{service}.log"
    with _server(config, database_url, receiver, service, sampler, log) as (server, port):
        probe = asyncio.run(_probe(port, 30))
        match = re.search(r"realapp: .* cpu=(\d+|None)", server.output())
        placement = match.group(0) if match else "(no start-up line)"
        cpu = int(match.group(1)) if match and match.group(1) != "None" else None
        load = drive(port, clients=clients, seconds=seconds, seed=seed, avoid_cpu=cpu)
        load.requests.insert(0, probe)
        server.stop(signal.SIGINT)  # uvicorn shuts down; the sampler flushes its last window
    time.sleep(0.3)
    with ProfileReader(receiver.db_path) as reader:
        judgement = judge(reader.samples(Selection(service=service)), load.requests)
    return RunResult(config, service, load, judgement, placement, sampler, log)


# -- judging ------------------------------------------------------------------------------------


LOOP_FILES = ("/asyncio/", "/uvloop/", "/uvicorn/server.py", "/uvicorn/main.py", "/runners.py")


def classify(functions: Sequence[str], files: Sequence[str]) -> tuple[str, str | None]:
    """``(kind, endpoint)`` of a stack (leaf first).

    Kinds: ``task`` and ``driver`` (an endpoint's own work: in its task, a task or greenlet of
    its own, or its row decoder run by the loop), then, with no endpoint frame, ``framework``,
    ``server``, ``driver-other``, ``span-profiles`` (the library's own frames at the leaf, outside
    any request), ``loop`` and ``other`` (see the module docstring).
    """
    for function, file in zip(functions, files, strict=False):
        owner = realapp.owner_of(function, file)
        if owner is not None:
            return ("driver" if any(map(realapp.is_decoder, functions)) else "task"), owner
    if any(f.endswith("run_asgi") for f in functions):
        return "framework", None
    if any("/uvicorn/protocols/" in f for f in files):
        return "server", None
    if any("/asyncpg/" in f or "/sqlalchemy/" in f for f in files):
        return "driver-other", None
    if files and "/span_profiles/" in files[0]:
        return "span-profiles", None
    if not files or any(marker in files[0] for marker in LOOP_FILES):
        return "loop", None
    return "other", None


@dataclass
class EndpointStats:
    """One endpoint's samples (counts) in one run."""

    requests: int = 0
    own: int = 0
    """Samples whose stack is this endpoint's work (task and driver callbacks)."""
    own_driver: int = 0
    """Of those, in the endpoint's row decoder run by the loop."""
    held: int = 0
    """Own samples labelled with exactly one span of this endpoint."""
    wrong: int = 0
    """Own samples labelled with exactly one span of another endpoint (or an unknown span)."""
    multi: int = 0
    """Own samples with several ``span_id`` labels."""
    unlabelled: int = 0
    """Own samples with no ``span_id``."""
    profile: int = 0
    """Samples carrying a span of this endpoint (its profile)."""
    profile_kinds: dict[str, int] = field(default_factory=dict)
    """The profile by stack kind (``own``, ``foreign``, ``framework``, ``server``, ``loop``...)."""

    @property
    def foreign(self) -> int:
        """Samples in this endpoint's profile whose stack is another endpoint's."""
        return self.profile_kinds.get("foreign", 0)

    def share(self, part: int, whole: int) -> float:
        """``part / whole`` (0 for an empty whole)."""
        return part / whole if whole else 0.0

    @property
    def held_share(self) -> float:
        """The share of this endpoint's own CPU that its spans hold."""
        return self.share(self.held, self.own)

    @property
    def foreign_share(self) -> float:
        """The share of this endpoint's profile that is other endpoints' work."""
        return self.share(self.foreign, self.profile)

    @property
    def unlabelled_share(self) -> float:
        """The share of this endpoint's own CPU with no span."""
        return self.share(self.unlabelled, self.own)

    @property
    def ms_per_request(self) -> float:
        """Own CPU per request, in milliseconds (by stack)."""
        return self.share(self.own, self.requests) * SAMPLE_MS


@dataclass
class Judgement:
    """Every sample of one run, judged."""

    total: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    """All samples by stack kind."""
    labelled_kinds: Counter[str] = field(default_factory=Counter)
    """Samples carrying a ``span_id``, by stack kind."""
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    driver: Counter[str] = field(default_factory=Counter)
    """Driver-callback samples (row decoders run by the loop): ``right``, ``foreign``, ``none``."""
    bare: int = 0
    """Samples whose ``span_name`` is a bare method."""
    bare_kinds: Counter[str] = field(default_factory=Counter)
    """Bare-method samples by stack kind."""
    unknown_span: int = 0
    """Samples labelled with a span id no response reported."""

    @property
    def driver_total(self) -> int:
        """All driver-callback samples."""
        return sum(self.driver.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, shares included."""
        return {
            "total": self.total,
            "kinds": dict(self.kinds),
            "labelled_kinds": dict(self.labelled_kinds),
            "driver": dict(self.driver),
            "driver_share": self.driver_total / self.total if self.total else 0.0,
            "bare": self.bare,
            "bare_kinds": dict(self.bare_kinds),
            "unknown_span": self.unknown_span,
            "endpoints": {
                name: {
                    **asdict(stats),
                    "held_share": stats.held_share,
                    "foreign_share": stats.foreign_share,
                    "unlabelled_share": stats.unlabelled_share,
                    "ms_per_request": stats.ms_per_request,
                }
                for name, stats in self.endpoints.items()
            },
        }


def judge(samples: Iterable[Any], requests: Sequence[tuple[str, str]]) -> Judgement:
    """Judge stored samples (``ProfileReader.samples``) against the requests that were served."""
    spans = {span_id: endpoint for endpoint, span_id in requests if span_id}
    result = Judgement(endpoints={name: EndpointStats() for name in realapp.ENDPOINTS})
    for endpoint, _ in requests:
        result.endpoints[endpoint].requests += 1
    for sample in samples:
        count = sample.count
        kind, owner = classify(sample.functions, sample.files)
        span_ids = sample.label_values("span_id")
        result.total += count
        result.kinds[kind] += count
        if span_ids:
            result.labelled_kinds[kind] += count
        if any(name in BARE_METHODS for name in sample.label_values("span_name")):
            result.bare += count
            result.bare_kinds[kind] += count
        if any(span_id not in spans for span_id in span_ids):
            result.unknown_span += count
        labelled = {spans[span_id] for span_id in span_ids if span_id in spans}
        if owner is not None:
            stats = result.endpoints[owner]
            stats.own += count
            if not span_ids:
                stats.unlabelled += count
            elif len(span_ids) > 1:
                stats.multi += count
            elif labelled == {owner}:
                stats.held += count
            else:
                stats.wrong += count
            if kind == "driver":
                stats.own_driver += count
                right = len(span_ids) == 1 and labelled == {owner}
                result.driver["right" if right else "foreign" if span_ids else "none"] += count
        for endpoint in labelled:
            stats = result.endpoints[endpoint]
            stats.profile += count
            part = kind if owner is None else "own" if owner == endpoint else "foreign"
            stats.profile_kinds[part] = stats.profile_kinds.get(part, 0) + count
    return result


@dataclass(frozen=True)
class Check:
    """One goal, judged."""

    name: str
    ok: bool
    detail: str


def goals(
    judgement: Judgement,
    *,
    foreign: float = 0.01,
    foreign_min_profile: int = 30,
    many_rows_held: float = 0.95,
    held: float = 0.90,
    held_min_own: int = 1,
    allowance: int = 0,
    bare: int = 0,
) -> list[Check]:
    """The issue's goals for a span-profiles run (the defaults), or looser bounds for tests.

    The foreign share is judged for profiles of at least ``foreign_min_profile`` samples, the
    held share for endpoints with at least ``held_min_own`` own samples; ``allowance`` samples
    may miss either bound whatever the share (small counts in short runs).
    """
    checks = []
    for name, stats in judgement.endpoints.items():
        if stats.profile >= foreign_min_profile:
            checks.append(
                Check(
                    f"{name}: foreign <= {foreign:.1%}",
                    stats.foreign <= max(allowance, foreign * stats.profile),
                    f"{stats.foreign}/{stats.profile} = {stats.foreign_share:.2%}",
                )
            )
        bound = many_rows_held if name == "many_rows" else held
        if stats.own >= max(held_min_own, 1):
            checks.append(
                Check(
                    f"{name}: held >= {bound:.0%}",
                    stats.own - stats.held <= max(allowance, (1 - bound) * stats.own),
                    f"{stats.held}/{stats.own} = {stats.held_share:.2%} (unlabelled "
                    f"{stats.unlabelled}, wrong {stats.wrong}, multi {stats.multi})",
                )
            )
    checks.append(
        Check(f"bare-method samples <= {bare}", judgement.bare <= bare, str(judgement.bare))
    )
    return checks
