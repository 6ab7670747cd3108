"""asyncio: labels re-applied at the start of every task step, on every loop.

Two mechanisms, because loops differ in what they let us see:

* stdlib loops run every callback, and so every task step (C tasks included, and tasks created
  before ``instrument()``), through the pure-Python ``asyncio.events.Handle._run``. One patch
  there covers every such loop in every thread. The loop's own callbacks (transport reads,
  protocol parsing) run in the loop's base context, so they clear the labels as a side effect.
* loops with native handles (uvloop) get a chained task factory that wraps each new task's
  coroutine in :class:`StepCoroutine`, whose ``send``/``throw`` refresh the labels. uvloop loops
  created after ``instrument()`` get it at construction (``uvloop.Loop.__init__`` is patched);
  a loop already running gets it when ``instrument()`` or a local root span runs on it, and tasks
  it created before that are not covered.

Labels stay applied after a step until the next callback re-evaluates them (no clear per step):
that halves the agent calls, and unchanged labels between steps cost no call at all.
"""

from __future__ import annotations

import asyncio
import asyncio.format_helpers
import importlib.util
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any

from span_profiles._core import engine, guard
from span_profiles._core.patching import Patches
from span_profiles._core.sinks import EMPTY, Labels

_FACTORY_MARK = "__span_profiles__"

_hooked_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_patches: Patches | None = None


def _make_handle_run(
    original: Callable[[Any], None], var: ContextVar[Any]
) -> Callable[[Any], None]:
    # Everything the per-step path touches is bound as a default argument: local lookups only.
    # The sink and its bookkeeping are fixed for as long as the patch is in place.
    def _run(
        self: Any,
        _var: ContextVar[Any] = var,
        _key: str = engine.SPAN_KEY,
        _holder: Callable[[Any], Any] = engine._holders_get,
        _applied: Callable[[int, Labels], Labels] = engine._applied_get,
        _ident: Callable[[], int] = threading.get_ident,
        _sink_apply: list[Callable[[Labels], None]] = engine._sink_apply,
        _empty: Labels = EMPTY,
    ) -> None:
        try:
            otel = self._context.get(_var)
            holder = _holder(otel.get(_key)) if otel is not None else None
            labels = _empty if holder is None else holder.labels
            if _applied(_ident(), _empty) is not labels:
                try:
                    _sink_apply[0](labels)
                except Exception as exc:
                    engine.sink_failed(exc)
        except Exception as exc:
            guard.fail("the asyncio step hook", exc, _unpatch_handle)
        # The stdlib body, inlined rather than called: one Python frame less on every callback
        # of every loop. Only for the versions whose body this copies (see _report_error).
        try:
            self._context.run(self._callback, *self._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            _report_error(self, exc)

    if sys.version_info >= (3, 14):  # pragma: no cover - an unknown stdlib body: call it
        hook = _make_hook_only(var)

        def _run_calling_original(self: Any) -> None:
            hook(self)
            original(self)

        _run_calling_original.__wrapped__ = original  # type: ignore[attr-defined]
        return _run_calling_original
    _run.__wrapped__ = original  # type: ignore[attr-defined]
    return _run


def _report_error(handle: Any, exc: BaseException) -> None:
    """``Handle._run``'s error path as in CPython 3.10-3.13 (3.13 added ``debug=``)."""
    if sys.version_info >= (3, 13):
        source = asyncio.format_helpers._format_callback_source(
            handle._callback, handle._args, debug=handle._loop.get_debug()
        )
    else:
        source = asyncio.format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        "message": f"Exception in callback {source}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _make_hook_only(var: ContextVar[Any]) -> Callable[[Any], None]:
    def hook(self: Any) -> None:
        try:
            engine.refresh_from(self._context.get(var))
        except Exception as exc:
            guard.fail("the asyncio step hook", exc, _unpatch_handle)

    return hook


def _unpatch_handle() -> None:
    if _patches is not None:
        _patches.undo(asyncio.events.Handle)


class StepCoroutine(Coroutine[Any, Any, Any]):
    """Wraps a task's coroutine so each step first shows the labels of the task's context.

    Attribute reads fall through to the wrapped coroutine (``cr_frame``, ``__qualname__``...), so
    task reprs and introspection keep working; ``task.get_coro()`` returns this wrapper.
    """

    __slots__ = ("_coro",)

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro

    def send(self, value: Any, /) -> Any:
        """Refresh the labels, then run one step."""
        if value is None:
            return self.__next__()
        _refresh()
        return self._coro.send(value)

    def __next__(self) -> Any:
        """``send(None)``: a task's step. C tasks call this slot, when there is one, not ``send``."""
        # Inlined (module globals set by install()): this runs on every step of every task.
        try:
            holder = _holder(_var_get().get(_KEY))
            labels = EMPTY if holder is None else holder.labels
            if _applied(_ident(), EMPTY) is not labels:
                try:
                    _sink_apply[0](labels)
                except Exception as exc:
                    engine.sink_failed(exc)
        except Exception as exc:
            guard.fail("the asyncio task hook", exc)
        return self._coro.send(None)

    def throw(self, *args: Any) -> Any:
        """Refresh the labels, then throw into the coroutine."""
        _refresh()
        return self._coro.throw(*args)

    def close(self) -> None:
        """Close the wrapped coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coro, name)

    def __repr__(self) -> str:
        return repr(self._coro)


_KEY = engine.SPAN_KEY
_ident = threading.get_ident
_var_get: Callable[[], Any] = dict
_holder: Callable[[Any], Any] = engine._holders_get
_applied: Callable[[int, Labels], Labels] = engine._applied_get
_sink_apply: list[Callable[[Labels], None]] = engine._sink_apply


def _bind_step_globals(var: ContextVar[Any]) -> None:
    global _var_get, _holder, _applied, _sink_apply
    _var_get = var.get
    _holder = engine._holders_get
    _applied = engine._applied_get
    _sink_apply = engine._sink_apply


def _refresh() -> None:
    try:
        engine.refresh()
    except Exception as exc:
        guard.fail("the asyncio task hook", exc)


def _chain_factory(inner: Any) -> Callable[..., asyncio.Task[Any]]:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if not isinstance(coro, StepCoroutine):
            coro = StepCoroutine(coro)
        if inner is None:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = inner(loop, coro, **kwargs)
        # An eager task's first step ran inside this call, in the new task's context.
        _refresh()
        return task

    setattr(factory, _FACTORY_MARK, inner)
    return factory


def install_on_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Hook a loop whose handles are not stdlib ones (uvloop). Idempotent; chains to a user factory."""
    if isinstance(loop, asyncio.BaseEventLoop) or loop in _hooked_loops:
        return
    current = loop.get_task_factory()
    if current is not None and hasattr(current, _FACTORY_MARK):
        _hooked_loops.add(loop)
        return
    loop.set_task_factory(_chain_factory(current))
    _hooked_loops.add(loop)


def uninstall_from_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Put back the task factory that was there before :func:`install_on_loop`."""
    factory = loop.get_task_factory()
    if factory is not None and hasattr(factory, _FACTORY_MARK):
        loop.set_task_factory(getattr(factory, _FACTORY_MARK))
    _hooked_loops.discard(loop)


def ensure_running_loop() -> None:
    """Hook the running loop if it needs a per-loop hook (called when a local root starts)."""
    loop = asyncio._get_running_loop()
    if (
        loop is not None
        and loop not in _hooked_loops
        and not isinstance(loop, asyncio.BaseEventLoop)
    ):
        try:
            install_on_loop(loop)
        except Exception as exc:
            guard.fail("the asyncio task factory", exc)


def install(patches: Patches, var: ContextVar[Any]) -> None:
    """Patch ``Handle._run`` and ``BaseEventLoop.create_task``; hook the running loop if needed."""
    global _patches
    _patches = patches
    _bind_step_globals(var)
    handle = asyncio.events.Handle
    if not hasattr(handle._run, "__wrapped__"):
        patches.set(handle, "_run", _make_handle_run(handle._run, var))

    base = asyncio.base_events.BaseEventLoop
    original_create_task = base.create_task

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        task = original_create_task(self, coro, **kwargs)
        # With an eager task factory the new task's first step already ran here; give the
        # creator its own labels back.
        if self._task_factory is not None:
            _refresh()
        return task

    create_task.__wrapped__ = original_create_task  # type: ignore[attr-defined]
    if not hasattr(base.create_task, "__wrapped__"):
        patches.set(base, "create_task", create_task)
    _hook_uvloop_construction(patches)
    engine.span_started_hooks.append(ensure_running_loop)
    ensure_running_loop()


def _hook_uvloop_construction(patches: Patches) -> None:
    # uvloop is an asyncio loop, so this module may import it, but only if it is installed.
    try:
        if importlib.util.find_spec("uvloop") is None:
            return
        import uvloop
    except ImportError:
        return

    loop_class = uvloop.Loop
    original_init = loop_class.__init__
    if hasattr(original_init, "__wrapped__"):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        try:
            install_on_loop(self)
        except Exception as exc:
            guard.fail("the uvloop task factory", exc)

    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    patches.set(loop_class, "__init__", __init__)


def uninstall() -> None:
    """Restore the task factories we replaced on loops still alive."""
    for loop in list(_hooked_loops):
        if not loop.is_closed():
            uninstall_from_loop(loop)
    _hooked_loops.clear()


__all__ = [
    "StepCoroutine",
    "ensure_running_loop",
    "install",
    "install_on_loop",
    "uninstall",
    "uninstall_from_loop",
]
