"""The Starlette app the fidelity benchmark serves with uvicorn, configured by environment.

``SP_BENCH_LABELS`` picks the labelling: ``ours`` (``span_profiles.instrument()``), ``naive``
(pyroscope-otel's ``PyroscopeSpanProcessor``) or ``none`` (profiling without labels). In every
mode a sampler runs (``start_profiler()``, configured by the ``PYROSCOPE_*``/``SPAN_PROFILES_*``
environment: ``SPAN_PROFILES_SAMPLER`` picks pyroscope-io or the built-in one) and every request
gets a root span from OpenTelemetry's ASGI middleware, so modes differ only in labelling. Every
response carries ``x-span-id``, the root span's id.

``SP_BENCH_PROFILER=off`` runs no sampler at all and ``SP_BENCH_OTEL=off`` no tracing
(cost baselines); with ``SP_BENCH_LABELS=ours``
and the built-in sampler chosen, ``SP_BENCH_EVENTS_ONLY=1`` writes the label events into a ring
that no sampler reads (the labels' cost without the sampler's). ``SP_BENCH_KEEP_DROPPED=1`` has the built-in sampler upload what it drops, labelled
``span_profiles_dropped``. ``SP_BENCH_IDLE_THREADS`` starts that many threads that only wait; ``SP_BENCH_THREADS`` starts that many threads, each busy 1 ms in every 10 ms. ``SP_BENCH_STATS`` names a file
the app writes at exit: the built-in sampler's last counters, and its process id. ``/_profiler``
answers the sampler's pid and the agent's thread ids (for CPU accounting).

Handlers burn CPU in a function named ``burn_<endpoint>_r<rid>`` (``rid``: a request number the
client chooses), so every sample says which request it belongs to. ``rid=0`` uses the plain
``burn_<endpoint>`` (throughput runs make no per-request functions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import span_profiles
from span_profiles import _profiler
from span_profiles._profiler import pin_current_thread, start_profiler

_now = time.perf_counter_ns


def _burn(duration_ns: int, clock: Callable[[], int] = _now) -> None:
    end = clock() + duration_ns
    while clock() < end:
        pass


# Per-request clones of _burn: distinct code objects whose names identify the request. They are
# kept alive so that no two requests ever share a code object's address.
_functions: dict[tuple[str, int], Callable[[int], None]] = {}


def burner(endpoint: str, rid: int) -> Callable[[int], None]:
    """The burn function of one request (``burn_<endpoint>_r<rid>``)."""
    key = (endpoint, rid)
    function = _functions.get(key)
    if function is None:
        name = f"burn_{endpoint}_r{rid}" if rid else f"burn_{endpoint}"
        code = _burn.__code__.replace(co_name=name)
        if hasattr(code, "co_qualname"):  # 3.11+: the profiler reports the qualified name
            code = code.replace(co_qualname=name)
        function = types.FunctionType(code, _burn.__globals__, name, _burn.__defaults__)
        _functions[key] = function
    return function


def _params(request: Request) -> tuple[str, Callable[[int], None], int, int]:
    endpoint = request.path_params["endpoint"]
    query = request.query_params
    rid = int(query.get("rid", "0"))
    slice_ns = int(float(query.get("slice_us", "2000")) * 1000)
    steps = int(query.get("n", "10"))
    burn = burner(endpoint, rid)
    if query.get("clock") == "cpu":
        # Burn CPU time, not wall time: on a busy machine a wall-clock slice gets less CPU,
        # which would hide what the CPU cost benchmark measures.
        burn = functools.partial(burn, clock=time.thread_time_ns)
    return endpoint, burn, slice_ns, steps


def _span_header() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    return {"x-span-id": format(context.span_id, "016x")}


async def _slices(burn: Callable[[int], None], slice_ns: int, steps: int) -> None:
    for _ in range(steps):
        burn(slice_ns)
        await asyncio.sleep(0)


async def slices(request: Request) -> Response:
    """Burn ``n`` slices of ``slice_us`` with an ``await asyncio.sleep(0)`` after each."""
    _, burn, slice_ns, steps = _params(request)
    await _slices(burn, slice_ns, steps)
    return PlainTextResponse("ok", headers=_span_header())


async def children(request: Request) -> Response:
    """Three child tasks (``create_task`` + ``gather``) burn the slices between them."""
    _, burn, slice_ns, steps = _params(request)
    tasks = [asyncio.create_task(_slices(burn, slice_ns, max(steps // 3, 1))) for _ in range(3)]
    await asyncio.gather(*tasks)
    return PlainTextResponse("ok", headers=_span_header())


async def task_group(request: Request) -> Response:
    """Three tasks of an ``asyncio.TaskGroup`` burn the slices between them."""
    _, burn, slice_ns, steps = _params(request)
    task_group_class: Any = getattr(asyncio, "TaskGroup", None)
    if task_group_class is None:
        return PlainTextResponse("TaskGroup needs Python 3.11", status_code=501)
    async with task_group_class() as group:
        for _ in range(3):
            group.create_task(_slices(burn, slice_ns, max(steps // 3, 1)))
    return PlainTextResponse("ok", headers=_span_header())


async def streaming(request: Request) -> Response:
    """A streamed body: one slice burnt before each of ``n`` chunks."""
    _, burn, slice_ns, steps = _params(request)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(steps):
            burn(slice_ns)
            yield b"x" * 64
            await asyncio.sleep(0)

    return StreamingResponse(body(), headers=_span_header(), media_type="text/plain")


async def to_thread(request: Request) -> Response:
    """``asyncio.to_thread`` runs each slice on a worker thread."""
    _, burn, slice_ns, steps = _params(request)
    for _ in range(steps):
        await asyncio.to_thread(burn, slice_ns)
    return PlainTextResponse("ok", headers=_span_header())


_pool: concurrent.futures.ThreadPoolExecutor | None = None


async def in_executor(request: Request) -> Response:
    """``loop.run_in_executor`` on a user pool (created on the loop thread) runs each slice."""
    global _pool
    _, burn, slice_ns, steps = _params(request)
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="user-pool")
    loop = asyncio.get_running_loop()
    for _ in range(steps):
        await loop.run_in_executor(_pool, burn, slice_ns)
    return PlainTextResponse("ok", headers=_span_header())


def sync_endpoint(request: Request) -> Response:
    """A sync endpoint: Starlette runs it in its thread pool; it burns all slices in a row."""
    _, burn, slice_ns, steps = _params(request)
    for _ in range(steps):
        burn(slice_ns)
    return PlainTextResponse("ok", headers=_span_header())


def _builtin_state() -> Any:
    from span_profiles._samplers.builtin.sampler import SAMPLER

    return SAMPLER


def profiler_info(request: Request) -> Response:
    """The sampler's process id (built-in) or the agent's thread ids (pyroscope-io)."""
    import json

    running = _profiler.running_sampler()
    pid = None
    if running is not None and running.name == "builtin":
        pid = _builtin_state().process_id()
    body = {
        "sampler": running.name if running is not None else None,
        "sampler_pid": pid,
        "agent_threads": sorted(_profiler.agent_thread_ids()),
    }
    return Response(json.dumps(body), media_type="application/json")


def _write_stats(path: str) -> None:
    import json

    with open(path, "w") as file:
        json.dump(_builtin_state().last_stats, file)


def build() -> Any:
    """Configure tracing, labelling and the agent from the environment; return the ASGI app."""
    labels = os.environ.get("SP_BENCH_LABELS", "ours")
    service = os.environ.get("OTEL_SERVICE_NAME", "fidelity")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    trace.set_tracer_provider(provider)
    if labels == "ours":
        span_profiles.instrument(tracer_provider=provider)
    elif labels == "naive":
        from pyroscope.otel import PyroscopeSpanProcessor

        provider.add_span_processor(PyroscopeSpanProcessor())
    elif labels != "none":
        sys.exit(f"SP_BENCH_LABELS must be ours, naive or none, not {labels!r}")
    import atexit
    import json

    stats_file = os.environ.get("SP_BENCH_STATS")
    if stats_file:
        # Registered before the profiler's own exit hook, so it runs after it (atexit is LIFO).
        atexit.register(_write_stats, stats_file)
    threads = int(os.environ.get("SP_BENCH_THREADS", "0"))
    for index in range(threads):
        # Busy 1 ms in every 10 ms: many threads, a few on a CPU at any time.
        import threading

        def busy() -> None:
            while True:
                _burn(1_000_000)
                time.sleep(0.009)

        threading.Thread(target=busy, name=f"busy-{index}", daemon=True).start()
    for index in range(int(os.environ.get("SP_BENCH_IDLE_THREADS", "0"))):
        import threading

        stop = threading.Event()
        threading.Thread(target=stop.wait, name=f"idle-{index}", daemon=True).start()
    if os.environ.get("SP_BENCH_KEEP_DROPPED") == "1":
        _builtin_state().keep_dropped = True
    if os.environ.get("SP_BENCH_PROFILER") == "off":
        pass
    elif os.environ.get("SP_BENCH_EVENTS_ONLY") == "1":
        from span_profiles._samplers.builtin.ring import RingWriter
        from span_profiles._samplers.builtin.sampler import SAMPLER

        SAMPLER.sink.attach(RingWriter())
    elif not start_profiler(tracer_provider=provider):
        sys.exit("the profiler did not start")
    del json
    # uvicorn imports the app before its loop runs: the loop thread announces itself here, at
    # lifespan startup (what SpanProfilesMiddleware does).
    routes = [
        Route("/_profiler", profiler_info),
        Route("/slices/{endpoint}", slices),
        Route("/children/{endpoint}", children),
        Route("/taskgroup/{endpoint}", task_group),
        Route("/streaming/{endpoint}", streaming),
        Route("/to_thread/{endpoint}", to_thread),
        Route("/executor/{endpoint}", in_executor),
        Route("/sync/{endpoint}", sync_endpoint),
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    if os.environ.get("SP_BENCH_OTEL") == "off":
        return starlette  # no tracing at all (cost baseline)
    return OpenTelemetryMiddleware(starlette, tracer_provider=provider)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Pin the loop thread next to the agent (per ``pin_cpu``) and report what happened."""
    pinned = pin_current_thread()
    print(
        f"span-profiles bench: labels={os.environ.get('SP_BENCH_LABELS', 'ours')} "
        f"pinned={pinned} cpu={_profiler.pinned_cpu()} "
        f"agent_threads={len(_profiler.agent_thread_ids())} "
        f"loop={type(asyncio.get_running_loop()).__module__} "
        f"loop_tid={threading.get_native_id()} "
        f"agent_tids={','.join(map(str, sorted(_profiler.agent_thread_ids())))}",
        file=sys.stderr,
        flush=True,
    )
    yield
    placement = span_profiles.current_placement()
    native, python = _thread_cpu()
    print(
        f"span-profiles bench: at exit cpu={placement.cpu} moves={placement.moves} "
        f"reason={placement.reason!r} native_cpu_s={native:.3f} python_cpu_s={python:.3f}",
        file=sys.stderr,
        flush=True,
    )


def _thread_cpu() -> tuple[float, float]:
    """CPU seconds of this process's native (non-Python: the agent's) and Python threads."""
    python_tids = {t.native_id for t in threading.enumerate()}
    native = python = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if int(tid) in python_tids:
            python += seconds
        else:
            native += seconds
    return native, python


app = build()
