"""asyncio: each task step shows its task's labels, and the loop's own work shows none.

Two mechanisms, because loops differ in what they let us see:

* stdlib loops run every callback, and so every task step (C tasks included, and tasks created
  before ``instrument()``), through the pure-Python ``asyncio.events.Handle._run``. One patch
  there covers every such loop in every thread: each callback shows the labels of the context
  it runs in. ``BaseEventLoop._run_once`` clears them when an iteration starts, so polling,
  timers and turning I/O events into callbacks carry no span; consecutive callbacks of one
  request within an iteration make no agent call.
* loops with native handles (uvloop) get a chained task factory that wraps each new task's
  coroutine in :class:`StepCoroutine`, whose ``send``/``throw`` show the labels for the step and
  clear them when it returns: uvloop runs its own work and its protocol callbacks natively, with
  no Python hook between steps. uvloop loops created after ``instrument()`` get it at
  construction (``uvloop.Loop.__init__`` is patched); a loop already running gets it when
  ``instrument()`` or a local root span runs on it, and tasks it created before that are not
  covered.

Which request the loop's I/O callbacks (a driver decoding rows) work for is
:mod:`span_profiles._hooks.transports`'s job.
"""

from __future__ import annotations

import asyncio
import asyncio.format_helpers
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any

from span_profiles._core import engine, guard
from span_profiles._core.engine import HotPath
from span_profiles._core.patching import Patches
from span_profiles._core.sinks import EMPTY, Labels
from span_profiles._hooks import installed_module, no_undo

_FACTORY_MARK = "__span_profiles__"


def _make_handle_run(
    original: Callable[[Any], None], hot: HotPath, var: ContextVar[Any], off: Callable[[], None]
) -> Callable[[Any], None]:
    # Everything the per-step path touches is bound as a default argument: local lookups only.
    def _run(
        self: Any,
        _var: ContextVar[Any] = var,
        _key: str = hot.key,
        _holder: Callable[[Any], Any] = hot.holder,
        _applied: Callable[[int, Labels], Labels] = hot.applied,
        _ident: Callable[[], int] = threading.get_ident,
        _sink_apply: list[Callable[[Labels], None]] = hot.apply,
        _empty: Labels = EMPTY,
    ) -> None:
        # kernel: keep in step with engine.refresh_from
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
            guard.fail("the asyncio step hook", exc, off)
        # The stdlib body (CPython 3.10-3.15), inlined rather than called: one Python frame less
        # on every callback of every loop. Only for the versions whose body this copies.
        try:
            self._context.run(self._callback, *self._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            _report_error(self, exc)
        # As in the stdlib: a stored exception's traceback holds this frame, so the handle must
        # not stay reachable from it (that would be a cycle when the callback keeps the error).
        self = None

    if sys.version_info >= (3, 16):  # pragma: no cover - an unknown stdlib body: call it

        def _run_calling_original(self: Any) -> None:
            try:
                engine.refresh_from(self._context.get(var))
            except Exception as exc:
                guard.fail("the asyncio step hook", exc, off)
            original(self)

        _run_calling_original.__wrapped__ = original  # type: ignore[attr-defined]
        return _run_calling_original
    _run.__wrapped__ = original  # type: ignore[attr-defined]
    return _run


def _make_run_once(original: Callable[[Any], None], hot: HotPath) -> Callable[[Any], None]:
    def _run_once(
        self: Any,
        _applied: Callable[[int, Labels], Labels] = hot.applied,
        _ident: Callable[[], int] = threading.get_ident,
        _sink_apply: list[Callable[[Labels], None]] = hot.apply,
        _empty: Labels = EMPTY,
    ) -> None:
        # A new loop iteration: polling, timers and turning I/O events into callbacks serve no
        # request. Clearing here, not after every callback, keeps consecutive callbacks of one
        # request free of agent calls; each callback shows its own labels as it starts.
        if _applied(_ident(), _empty) is not _empty:
            try:
                _sink_apply[0](_empty)
            except Exception as exc:
                engine.sink_failed(exc)
        original(self)

    _run_once.__wrapped__ = original  # type: ignore[attr-defined]
    return _run_once


def _report_error(handle: Any, exc: BaseException) -> None:
    """``Handle._run``'s error path as in CPython 3.10-3.15 (3.13 added ``debug=``)."""
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


class StepCoroutine(Coroutine[Any, Any, Any]):
    """Wraps a task's coroutine so each step first shows the labels of the task's context.

    Attribute reads fall through to the wrapped coroutine (``cr_frame``, ``__qualname__``...), so
    task reprs and introspection keep working; ``task.get_coro()`` returns this wrapper. Each
    installation makes a subclass whose ``__next__`` binds its :class:`HotPath`.
    """

    __slots__ = ("_coro",)

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro

    def send(self, value: Any, /) -> Any:
        """Refresh the labels, then run one step."""
        if value is None:
            return self.__next__()
        _refresh()
        try:
            return self._coro.send(value)
        finally:
            _step_over()

    def __next__(self) -> Any:
        """``send(None)``: a task's step. C tasks call this slot, when there is one, not ``send``."""
        _refresh()
        try:
            return self._coro.send(None)
        finally:
            _step_over()

    def throw(self, *args: Any) -> Any:
        """Refresh the labels, then throw into the coroutine."""
        _refresh()
        try:
            return self._coro.throw(*args)
        finally:
            _step_over()

    def close(self) -> None:
        """Close the wrapped coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coro, name)

    def __repr__(self) -> str:
        return repr(self._coro)


def _step_coroutine_class(hot: HotPath, var: ContextVar[Any]) -> type[StepCoroutine]:
    """A :class:`StepCoroutine` whose per-step path reads ``hot`` by local lookups only."""

    def __next__(
        self: StepCoroutine,
        _var_get: Callable[[], Any] = var.get,
        _key: str = hot.key,
        _holder: Callable[[Any], Any] = hot.holder,
        _applied: Callable[[int, Labels], Labels] = hot.applied,
        _ident: Callable[[], int] = threading.get_ident,
        _sink_apply: list[Callable[[Labels], None]] = hot.apply,
        _empty: Labels = EMPTY,
    ) -> Any:
        # kernel: keep in step with engine.refresh_from
        try:
            holder = _holder(_var_get().get(_key))
            labels = _empty if holder is None else holder.labels
            if _applied(_ident(), _empty) is not labels:
                try:
                    _sink_apply[0](labels)
                except Exception as exc:
                    engine.sink_failed(exc)
        except Exception as exc:
            guard.fail("the asyncio task hook", exc)
        try:
            return self._coro.send(None)
        finally:
            # The step is over. What uvloop runs next until another step (its native protocol
            # callbacks, its own work, the server's parsing) serves no request unless it says so.
            if _applied(_ident(), _empty) is not _empty:
                try:
                    _sink_apply[0](_empty)
                except Exception as exc:
                    engine.sink_failed(exc)

    __next__.__doc__ = StepCoroutine.__next__.__doc__
    return type("StepCoroutine", (StepCoroutine,), {"__slots__": (), "__next__": __next__})


def _refresh() -> None:
    try:
        engine.refresh()
    except Exception as exc:
        guard.fail("the asyncio task hook", exc)


def _step_over() -> None:
    try:
        engine.clear()
    except Exception as exc:
        guard.fail("the asyncio task hook", exc)


_EAGER_FACTORY_CODE = getattr(getattr(asyncio, "eager_task_factory", None), "__code__", None)


def _eager_task_constructor(factory: Any) -> Any | None:
    """The task constructor of a factory made by ``asyncio.create_eager_task_factory``."""
    if _EAGER_FACTORY_CODE is None or getattr(factory, "__code__", None) is not _EAGER_FACTORY_CODE:
        return None
    closure = getattr(factory, "__closure__", None)
    return closure[0].cell_contents if closure else None


def _tell_observer(hot: HotPath, var: ContextVar[Any], task: Any, context: Any) -> None:
    """A task was created: the label-change observer (wall-clock profiles) learns its labels."""
    watcher = engine.observer[0]
    if watcher is None:
        return
    try:
        otel = context.get(var) if context is not None else var.get(None)
        labels = _labels_of(hot, otel)
        if labels:
            watcher.task_created(task, labels)
    except Exception as exc:
        guard.fail("the asyncio task-creation hook", exc)


def _chain_factory(
    inner: Any, wrap: type[StepCoroutine], var: ContextVar[Any], hot: HotPath
) -> Callable[..., asyncio.Task[Any]]:
    refresh_from = engine.refresh_from
    observer = engine.observer
    constructor = _eager_task_constructor(inner)
    factory: Callable[..., asyncio.Task[Any]]
    if constructor is not None:
        # An eager factory (asyncio.eager_task_factory) is chained as one made the same way, so
        # it stays recognisable: anyio takes such a factory's task constructor and starts its
        # own tasks lazily with it (its cancel scopes need that); ours wraps the coroutine.
        def construct(coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            if not isinstance(coro, StepCoroutine):
                coro = wrap(coro)
            task: asyncio.Task[Any] = constructor(coro, **kwargs)
            if observer[0] is not None:
                _tell_observer(hot, var, task, kwargs.get("context"))
            if kwargs.get("eager_start"):
                # The first step ran in this call (its StepCoroutine showed the task's labels):
                # the creator's labels again.
                try:
                    refresh_from(var.get(None))
                except Exception as exc:
                    guard.fail("the asyncio task hook", exc)
            return task

        factory = asyncio.create_eager_task_factory(construct)  # type: ignore[attr-defined]
    else:

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            if not isinstance(coro, StepCoroutine):
                coro = wrap(coro)
            if inner is None:
                task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
                if observer[0] is not None:
                    _tell_observer(hot, var, task, kwargs.get("context"))
                if not kwargs.get("eager_start"):
                    return task  # no step ran: the creator's labels are still shown
            else:
                # Any factory may start the task eagerly.
                task = inner(loop, coro, **kwargs)
                if observer[0] is not None:
                    _tell_observer(hot, var, task, kwargs.get("context"))
            # An eager first step ran inside this call (its StepCoroutine showed the task's
            # labels): the creator's labels again.
            try:
                refresh_from(var.get(None))
            except Exception as exc:
                guard.fail("the asyncio task hook", exc)
            return task

    setattr(factory, _FACTORY_MARK, inner)
    return factory


def uninstall_from_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Put back the task factory that was there before the loop was hooked."""
    factory = loop.get_task_factory()
    if factory is not None and hasattr(factory, _FACTORY_MARK):
        loop.set_task_factory(getattr(factory, _FACTORY_MARK))


class _LoopHooks:
    """The per-loop task-factory hook of one installation, for loops with native handles.

    ``chain(inner)`` makes the factory that calls the loop's former factory ``inner``.
    """

    def __init__(self, chain: Callable[[Any], Callable[..., asyncio.Task[Any]]]) -> None:
        self.chain = chain
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    def install_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hook a loop whose handles are not stdlib ones; idempotent; chains to a user factory."""
        if isinstance(loop, asyncio.BaseEventLoop) or loop in self.loops:
            return
        current = loop.get_task_factory()
        if current is None or not hasattr(current, _FACTORY_MARK):
            loop.set_task_factory(self.chain(current))
        self.loops.add(loop)

    def on_root_started(self) -> None:
        """Hook the running loop if it needs a per-loop hook (a local root starts on it)."""
        loop = asyncio._get_running_loop()
        if (
            loop is not None
            and loop not in self.loops
            and not isinstance(loop, asyncio.BaseEventLoop)
        ):
            try:
                self.install_on(loop)
            except Exception as exc:
                guard.fail("the asyncio task factory", exc)

    def undo(self) -> None:
        """Restore the task factories replaced on loops still alive."""
        hooked = list(self.loops)
        self.loops.clear()  # first: uvloop's patched set_task_factory chains on hooked loops
        for loop in hooked:
            if not loop.is_closed():
                uninstall_from_loop(loop)


def install(hot: HotPath) -> Callable[[], None]:
    """Patch ``Handle._run`` and ``BaseEventLoop.create_task``; hook the running loop if needed."""
    var = hot.var
    if var is None:
        return no_undo
    patches = hot.patches
    handle = asyncio.events.Handle
    if not hasattr(handle._run, "__wrapped__"):
        off = functools.partial(patches.undo, handle)
        patches.set(handle, "_run", _make_handle_run(handle._run, hot, var, off))

    base: Any = asyncio.base_events.BaseEventLoop
    if not hasattr(base._run_once, "__wrapped__"):
        patches.set(base, "_run_once", _make_run_once(base._run_once, hot))
    original_create_task = base.create_task
    refresh_from = engine.refresh_from
    observer = engine.observer

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        # The new task's first step runs inside this call only when it starts eagerly: with a
        # task factory (asyncio.eager_task_factory, 3.12+) or eager_start=True (3.14+). That
        # step runs outside Handle._run; otherwise creating a task costs this one test more
        # (two with wall-clock profiles on: the observer learns the new task's labels).
        if self._task_factory is None and not (kwargs and kwargs.get("eager_start")):
            if observer[0] is None:
                return original_create_task(self, coro, **kwargs)
            created = original_create_task(self, coro, **kwargs)
            _tell_observer(hot, var, created, kwargs.get("context"))
            return created
        context = kwargs.get("context")
        if context is not None:
            # The eager step runs in that context from its first line: show its labels.
            try:
                refresh_from(context.get(var))
            except Exception as exc:
                guard.fail("the asyncio task hook", exc)
        try:
            task = original_create_task(self, coro, **kwargs)
            if observer[0] is not None:
                _tell_observer(hot, var, task, context)
        finally:
            # The creator's step goes on: its own labels again (no agent call when unchanged).
            try:
                refresh_from(var.get(None))
            except Exception as exc:
                guard.fail("the asyncio task hook", exc)
        try:
            return task
        finally:
            # As in the stdlib (gh-128552): a failed eager step's traceback holds this frame.
            del task

    create_task.__wrapped__ = original_create_task  # type: ignore[attr-defined]
    if not hasattr(base.create_task, "__wrapped__"):
        patches.set(base, "create_task", create_task)
    wrap = _step_coroutine_class(hot, var)
    loops = _LoopHooks(lambda inner: _chain_factory(inner, wrap, var, hot))
    _hook_uvloop_construction(patches, loops)
    hot.root_started.append(loops.on_root_started)
    loops.on_root_started()
    return loops.undo


def _hook_uvloop_construction(patches: Patches, loops: _LoopHooks) -> None:
    # uvloop is an asyncio loop, so this module may import it, but only if it is installed.
    uvloop = installed_module("uvloop")
    if uvloop is None:
        return
    loop_class = uvloop.Loop
    original_init = loop_class.__init__
    if hasattr(original_init, "__wrapped__"):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        try:
            loops.install_on(self)
        except Exception as exc:
            guard.fail("the uvloop task factory", exc)

    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    patches.set(loop_class, "__init__", __init__)

    original_set = loop_class.set_task_factory

    def set_task_factory(self: Any, factory: Any) -> None:
        # A factory set on a hooked loop (asyncio.eager_task_factory, say) goes under ours,
        # which it would otherwise replace: the loop's tasks would lose their step hook.
        if self in loops.loops and not hasattr(factory, _FACTORY_MARK):
            try:
                factory = loops.chain(factory)
            except Exception as exc:
                guard.fail("the uvloop task factory", exc)
        original_set(self, factory)

    set_task_factory.__wrapped__ = original_set  # type: ignore[attr-defined]
    patches.set(loop_class, "set_task_factory", set_task_factory)


# -- task identity: no per-step work ------------------------------------------------------------


def _labels_of(hot: HotPath, otel: Any) -> Labels:
    """The labels of an OTel context (``None``: no context)."""
    holder = hot.holder(otel.get(hot.key)) if otel is not None else None
    return EMPTY if holder is None else holder.labels


def _record_creation(
    hot: HotPath, var: ContextVar[Any], create: Callable[[], Any], context: Any, eager: bool
) -> Any:
    """Run ``create()`` (it makes one task) and tell the sink the new task's labels."""
    sink: Any = engine.current_sink()
    created = getattr(sink, "task_created", None)
    if created is None:
        return create()
    if eager:
        # Its first step may run inside create(), before the task can be named: the sampler
        # takes a task it does not know yet, seen on this thread meanwhile, to have these labels.
        try:
            otel = context.get(var) if context is not None else var.get(None)
            sink.eager_begin(_labels_of(hot, otel))
        except Exception as exc:
            guard.fail("the asyncio task-creation hook", exc)
        try:
            task = create()
        finally:
            sink.eager_end()
    else:
        task = create()
    try:
        get_context = getattr(task, "get_context", None)
        if get_context is not None:
            created(task, _labels_of(hot, get_context().get(var)))
    except Exception as exc:
        guard.fail("the asyncio task-creation hook", exc)
    return task


class _TaskIdentity:
    """asyncio without per-step work, for a sampler that reads the running task with the stack.

    Each new task's labels (those of its context) go to the sink's ``task_created``; a task
    whose first step may run inside ``create_task`` (a task factory, ``eager_start``) is
    bracketed by ``eager_begin``/``eager_end``. Stdlib loops: ``BaseEventLoop.create_task`` is
    patched; loops with native task creation (uvloop) get a chained task factory, which adds a
    call per task creation and nothing per step.
    """

    def install(self, hot: HotPath, /) -> Callable[[], None]:
        """Patch task creation (undone with ``hot.patches`` and the returned undo)."""
        var = hot.var
        if var is None:
            return no_undo
        base = asyncio.base_events.BaseEventLoop
        original = base.create_task

        def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
            eager = self._task_factory is not None or bool(kwargs.get("eager_start"))
            return _record_creation(
                hot,
                var,
                lambda: original(self, coro, **kwargs),
                kwargs.get("context"),
                eager,
            )

        create_task.__wrapped__ = original  # type: ignore[attr-defined]
        if not hasattr(original, "__wrapped__"):
            hot.patches.set(base, "create_task", create_task)

        def chain(inner: Any) -> Callable[..., asyncio.Task[Any]]:
            def factory(
                loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
            ) -> asyncio.Task[Any]:
                def create() -> Any:
                    if inner is None:
                        return asyncio.Task(coro, loop=loop, **kwargs)
                    return inner(loop, coro, **kwargs)

                task: asyncio.Task[Any] = _record_creation(
                    hot, var, create, kwargs.get("context"), inner is not None
                )
                return task

            setattr(factory, _FACTORY_MARK, inner)
            return factory

        loops = _LoopHooks(chain)
        _hook_uvloop_construction(hot.patches, loops)
        hot.root_started.append(loops.on_root_started)
        loops.on_root_started()
        return loops.undo


task_identity = _TaskIdentity()
"""The hook (``install(hot) -> undo``) that replaces this module's per-step hook for samplers
that read the running task together with the stack (the built-in sampler)."""

__all__ = ["StepCoroutine", "install", "task_identity", "uninstall_from_loop"]
