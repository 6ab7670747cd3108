"""Threads: a job on a worker thread shows the submitting unit's labels, and none afterwards.

* ``ThreadPoolExecutor.submit`` (so ``loop.run_in_executor``, ``asyncio.to_thread`` and asgiref's
  ``sync_to_async``) and asgiref's ``CurrentThreadExecutor.submit`` capture the submitter's OTel
  context and attach it around the job, like ``opentelemetry-instrumentation-threading`` does.
* ``anyio.to_thread.run_sync`` and ``trio.to_thread.run_sync`` already run the job in a copy of
  the caller's context; the job is wrapped to apply its labels first and clear them after.
* Every ``threading.Thread`` clears, on start and on exit, labels that a dead thread with the
  same ident left in the agent (glibc reuses idents at once).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import context as otel_context

from span_profiles._core import engine, guard, sampler_gate
from span_profiles._core.engine import HotPath
from span_profiles._core.patching import Patches
from span_profiles._hooks import no_undo

_MARK = "__span_profiles_job__"


def _run_in_context(otel_ctx: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    # attach() and detach() switch labels already (the OTel hook): the waits go before them.
    sampler_gate.wait()
    token = otel_context.attach(otel_ctx)
    try:
        engine.refresh_from(otel_ctx)
        return fn(*args, **kwargs)
    finally:
        sampler_gate.wait()
        otel_context.detach(token)
        # Back to the worker's own context: none for a pool thread, the caller's for asgiref's
        # CurrentThreadExecutor, which runs jobs on the thread blocked in async_to_sync.
        engine.refresh()


class LabelledJob:
    """A callable run on a worker thread under the context it was called in: labels on, then off."""

    __slots__ = ("__wrapped__",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            sampler_gate.wait()
            engine.refresh()
        except Exception as exc:
            guard.fail("the thread hook", exc)
        try:
            return self.__wrapped__(*args, **kwargs)
        finally:
            sampler_gate.wait()
            engine.clear()


def _wrap_submit(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        try:
            job = functools.partial(_run_in_context, otel_context.get_current(), fn)
        except Exception as exc:
            guard.fail("the executor hook", exc)
            job = fn  # type: ignore[assignment]
        return original(self, job, *args, **kwargs)

    setattr(submit, _MARK, True)
    return submit


def _wrap_to_thread(original: Callable[..., Any]) -> Callable[..., Any]:
    # Returns the coroutine of the original directly: no extra coroutine frame per call.
    @functools.wraps(original)
    def run_sync(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return original(LabelledJob(func), *args, **kwargs)

    setattr(run_sync, _MARK, True)
    return run_sync


def _wrap_bootstrap(original: Callable[[threading.Thread], None]) -> Callable[..., None]:
    @functools.wraps(original)
    def _bootstrap_inner(self: threading.Thread) -> None:
        try:
            # A dead thread with the same ident may have left labels behind.
            engine.clear()
        except Exception as exc:
            guard.fail("the thread start hook", exc)
        try:
            original(self)
        finally:
            try:
                engine.clear()
            except Exception as exc:
                guard.fail("the thread exit hook", exc)

    setattr(_bootstrap_inner, _MARK, True)
    return _bootstrap_inner


def _patch(patches: Patches, owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    current = getattr(owner, name, None)
    if current is not None and not getattr(current, _MARK, False):
        patches.set(owner, name, wrap(current))


def install(hot: HotPath) -> Callable[[], None]:
    """Patch executors, thread entry points and the imported ``to_thread`` helpers.

    The helpers of anyio, trio and asgiref are patched once those are imported (never importing
    them): at install and again whenever a local root starts, so a library imported after
    ``instrument()`` is covered from its first request on. The patches are undone with the rest
    of ``hot.patches``.
    """
    if hot.var is None:
        return no_undo  # the runtime context is not contextvars: jobs would not carry it
    patches = hot.patches

    def patch_imported_libraries() -> None:
        modules = sys.modules
        for module_name in ("anyio.to_thread", "trio.to_thread"):
            module = modules.get(module_name)
            if module is not None:
                _patch(patches, module, "run_sync", _wrap_to_thread)
        executor_module = modules.get("asgiref.current_thread_executor")
        if executor_module is not None:
            _patch(patches, executor_module.CurrentThreadExecutor, "submit", _wrap_submit)

    _patch(patches, ThreadPoolExecutor, "submit", _wrap_submit)
    _patch(patches, threading.Thread, "_bootstrap_inner", _wrap_bootstrap)
    hot.root_started.append(patch_imported_libraries)
    patch_imported_libraries()
    return no_undo
