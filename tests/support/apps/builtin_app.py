"""A Starlette app for the built-in sampler's end-to-end tests, served by a real uvicorn.

Endpoints burn CPU in functions named after them (``burn_<endpoint>``) so that every sample says
which endpoint it came from; each response carries its root span id in ``x-span-id``:

* ``/slices``: 2 ms slices with ``await asyncio.sleep(0)`` between them (task switches);
* ``/children``: three child tasks (``create_task`` + ``gather``) burn the slices;
* ``/thread``: ``asyncio.to_thread`` runs each slice on a worker thread;
* ``/sync``: a sync endpoint (Starlette's thread pool) burns all slices in a row;
* ``/sampler``: the sampler process's pid (faults are injected into it).

Environment: ``E2E_RECEIVER_URL`` (where profiles go), ``E2E_SECCOMP_DENY_READ=1`` (a seccomp
filter that makes ``process_vm_readv`` fail with EPERM, installed before the sampler starts),
``E2E_NOT_DUMPABLE=1`` (``prctl(PR_SET_DUMPABLE, 0)`` first), ``E2E_RING_SLOTS`` (a small
event ring, to fill it). The sampler is chosen by
``SPAN_PROFILES_SAMPLER`` like in any app.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import struct
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import span_profiles
from span_profiles import _profiler
from span_profiles._profiler import start_profiler

SLICE_NS = 2_000_000
SLICES = 10


def _burn(duration_ns: int) -> None:
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


def _named(name: str) -> Any:
    import types

    # co_qualname (3.11+) is what the sampler reports; this app runs on 3.14+ only.
    code = _burn.__code__.replace(co_name=name)
    code = getattr(code, "replace")(co_qualname=name)  # noqa: B009
    return types.FunctionType(code, _burn.__globals__, name)


burn_slices = _named("burn_slices")
burn_children = _named("burn_children")
burn_thread = _named("burn_thread")
burn_sync = _named("burn_sync")


def _span_header() -> dict[str, str]:
    span_id = format(trace.get_current_span().get_span_context().span_id, "016x")
    return {"x-span-id": span_id, "x-pid": str(os.getpid())}


async def slices(request: Request) -> Response:
    for _ in range(SLICES):
        burn_slices(SLICE_NS)
        await asyncio.sleep(0)
    return PlainTextResponse("ok", headers=_span_header())


async def _child(count: int) -> None:
    for _ in range(count):
        burn_children(SLICE_NS)
        await asyncio.sleep(0)


async def children(request: Request) -> Response:
    await asyncio.gather(*(asyncio.create_task(_child(SLICES // 3 + 1)) for _ in range(3)))
    return PlainTextResponse("ok", headers=_span_header())


async def thread(request: Request) -> Response:
    for _ in range(SLICES):
        await asyncio.to_thread(burn_thread, SLICE_NS)
    return PlainTextResponse("ok", headers=_span_header())


def sync(request: Request) -> Response:
    for _ in range(SLICES):
        burn_sync(SLICE_NS)
    return PlainTextResponse("ok", headers=_span_header())


def sampler(request: Request) -> Response:
    running = _profiler.running_sampler()
    pid = running.process_id() if running is not None and hasattr(running, "process_id") else None
    return JSONResponse({"pid": pid, "running": _profiler.profiler_running()})


def deny_process_vm_readv() -> None:
    """Install a seccomp filter: process_vm_readv fails with EPERM (x86_64 only)."""
    if platform.machine() != "x86_64":
        raise RuntimeError("the seccomp filter of this test is written for x86_64")
    libc = ctypes.CDLL(None, use_errno=True)
    ret_allow, ret_eperm = 0x7FFF0000, 0x00050000 | 1
    insns = [
        (0x20, 0, 0, 4),  # ld arch
        (0x15, 1, 0, 0xC000003E),  # jeq AUDIT_ARCH_X86_64 -> next+1
        (0x06, 0, 0, ret_allow),
        (0x20, 0, 0, 0),  # ld nr
        (0x15, 0, 1, 310),  # jeq process_vm_readv
        (0x06, 0, 0, ret_eperm),
        (0x06, 0, 0, ret_allow),
    ]
    program = b"".join(struct.pack("HBBI", *insn) for insn in insns)
    buffer = ctypes.create_string_buffer(program)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(insns), ctypes.addressof(buffer))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def build() -> Any:
    if os.environ.get("E2E_SECCOMP_DENY_READ") == "1":
        deny_process_vm_readv()
    if os.environ.get("E2E_NOT_DUMPABLE") == "1":
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    if os.environ.get("E2E_RING_SLOTS"):
        from span_profiles._samplers.builtin import sampler as builtin_sampler

        builtin_sampler.RING_SLOTS = int(os.environ["E2E_RING_SLOTS"])
    provider = TracerProvider(resource=Resource.create({"service.name": "builtin-e2e"}))
    trace.set_tracer_provider(provider)
    span_profiles.instrument(tracer_provider=provider)
    if not start_profiler(tracer_provider=provider, server_address=os.environ["E2E_RECEIVER_URL"]):
        raise RuntimeError("the profiler did not start")
    app = Starlette(
        routes=[
            Route("/slices", slices),
            Route("/children", children),
            Route("/thread", thread),
            Route("/sync", sync),
            Route("/sampler", sampler),
        ]
    )
    from span_profiles.asgi import SpanProfilesMiddleware

    return SpanProfilesMiddleware(app, tracer_provider=provider)


if os.environ.get("SP_IMPORT_ONLY") != "1":
    app = build()
