"""Every inlined copy of the per-step kernel behaves exactly like ``engine.refresh_from``.

The copies are found by their marker comment (``engine.KERNEL_MARK``), not by a hand-kept list:
a new copy without a runner here fails the test, and so does a copy whose agent calls or final
labels differ from the reference on any case of the oracle below.
"""

from __future__ import annotations

import ast
import contextvars
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles._core import engine
from span_profiles.testing import RecordingSink

SRC = Path(span_profiles.__file__).parent

Runner = Callable[[Any, Callable[[], None]], None]
"""Runs one kernel copy for a task/callback whose context holds this OTel context (or none);
the second argument is the step's own body, called where the task's code would run."""


def marked_kernels() -> list[tuple[str, str]]:
    """(module path, qualified name) of every function holding the marker comment."""
    found: list[tuple[str, str]] = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        marked = [i + 1 for i, line in enumerate(lines) if line.strip() == engine.KERNEL_MARK]
        if not marked:
            continue
        tree = ast.parse("\n".join(lines))

        def visit(node: ast.AST, prefix: str, line: int) -> str | None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    end = child.end_lineno or child.lineno
                    if child.lineno <= line <= end:
                        name = f"{prefix}{child.name}"
                        inner = visit(child, f"{name}.", line)
                        return inner or name
            return None

        for line in marked:
            qualname = visit(tree, "", line)
            assert qualname is not None, f"{path}:{line}: the marker is outside any function"
            found.append((path.relative_to(SRC).as_posix(), qualname))
    return found


@pytest.fixture
def installed() -> Iterator[tuple[RecordingSink, Any]]:
    """instrument() with a RecordingSink; yields the sink and a tracer."""
    span_profiles.uninstrument()
    provider, sink = TracerProvider(), RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    try:
        yield sink, provider.get_tracer("kernels")
    finally:
        span_profiles.uninstrument()


def _task_context(var: contextvars.ContextVar[Any], otel_ctx: Any) -> contextvars.Context:
    """A fresh contextvars.Context where OTel's var holds ``otel_ctx`` (unset for ``None``)."""
    ctx = contextvars.Context()
    if otel_ctx is not None:
        ctx.run(var.set, otel_ctx)
    return ctx


def _handle_run(var: contextvars.ContextVar[Any]) -> Runner:
    import asyncio

    patched: Callable[[Any], None] = asyncio.events.Handle._run
    assert hasattr(patched, "__wrapped__"), "Handle._run is not patched"

    class FakeHandle:
        _args = ()

        def __init__(self, ctx: contextvars.Context, body: Callable[[], None]) -> None:
            self._context = ctx
            self._callback = body

    return lambda otel_ctx, body: patched(FakeHandle(_task_context(var, otel_ctx), body))


def _step_coroutine(var: contextvars.ContextVar[Any]) -> Runner:
    from span_profiles._hooks import asyncio as asyncio_hook

    assert engine.installed is not None
    wrap = asyncio_hook._step_coroutine_class(engine.installed, var)

    class Once:
        def __init__(self, body: Callable[[], None]) -> None:
            self.body = body

        def send(self, value: Any) -> Any:
            self.body()
            return value

    def run(otel_ctx: Any, body: Callable[[], None]) -> None:
        step = wrap(Once(body))  # type: ignore[arg-type]
        _task_context(var, otel_ctx).run(step.__next__)
        # After the step the loop's own work follows: no labels are left behind.
        assert engine.shown.get(threading.get_ident(), engine.EMPTY) == engine.EMPTY

    return run


def _trio_step(var: contextvars.ContextVar[Any]) -> Runner:
    pytest.importorskip("trio")
    from span_profiles._hooks import trio as trio_hook

    assert engine.installed is not None
    instrument = trio_hook.LabelInstrument(engine.installed, var)

    class FakeTask:
        def __init__(self, ctx: contextvars.Context) -> None:
            self.context = ctx

    def run(otel_ctx: Any, body: Callable[[], None]) -> None:
        instrument.before_task_step(FakeTask(_task_context(var, otel_ctx)))  # type: ignore[arg-type]
        body()

    return run


RUNNERS: dict[tuple[str, str], Callable[[contextvars.ContextVar[Any]], Runner]] = {
    ("_hooks/asyncio.py", "_make_handle_run._run"): _handle_run,
    ("_hooks/asyncio.py", "_step_coroutine_class.__next__"): _step_coroutine,
    ("_hooks/trio.py", "LabelInstrument._make_step.before_task_step"): _trio_step,
}


def test_every_marked_copy_has_a_runner() -> None:
    """The marker finds exactly the known copies: a new one must be added to RUNNERS."""
    found = marked_kernels()
    assert len(found) == len(set(found))
    assert sorted(found) == sorted(RUNNERS), found


def _oracle_cases(tracer: Any) -> Iterator[tuple[str, Any, Any]]:
    """(name, labels shown before, OTel context to show) for every shape the hot path meets."""
    root = tracer.start_span("root")
    other = tracer.start_span("other")
    root_ctx = trace.set_span_in_context(root)
    child = tracer.start_span("child", context=root_ctx)
    child_ctx = trace.set_span_in_context(child, root_ctx)
    ended = tracer.start_span("ended")
    ended_ctx = trace.set_span_in_context(ended)
    ended.end()
    root_labels = engine.holders[root].labels
    other_labels = engine.holders[other].labels
    contexts = {
        "var unset": None,
        "no span": otel_context.Context(),
        "root": root_ctx,
        "child of root": child_ctx,
        "ended span": ended_ctx,
        "non-recording span": trace.set_span_in_context(trace.INVALID_SPAN),
    }
    shown = {"nothing": engine.EMPTY, "root": root_labels, "other": other_labels}
    try:
        for context_name, otel_ctx in contexts.items():
            for shown_name, labels in shown.items():
                yield f"{context_name}, showing {shown_name}", labels, otel_ctx
    finally:
        for span in (child, other, root):
            span.end()


@pytest.mark.parametrize("kernel", sorted(RUNNERS), ids=lambda k: k[1])
def test_each_copy_behaves_like_refresh_from(
    installed: tuple[RecordingSink, Any], kernel: tuple[str, str]
) -> None:
    """On every oracle case, the copy makes the same agent calls and leaves the same labels."""
    sink, tracer = installed
    var = engine.context_var()
    assert var is not None
    run = RUNNERS[kernel](var)
    checked = 0
    for name, before, otel_ctx in _oracle_cases(tracer):
        outcomes: list[tuple[Any, list[tuple[str, str, str]]]] = []

        def body(outcomes: list[Any] = outcomes) -> None:
            # What the step's own code sees: the labels and the agent calls made to show them.
            outcomes.append((sink.applied(), [(e.op, e.key, e.value) for e in sink.history]))

        def reference(otel_ctx: Any, body: Callable[[], None]) -> None:
            engine.refresh_from(otel_ctx)
            body()

        for kernel_or_reference in (run, reference):
            engine.apply(before)
            sink.reset()
            kernel_or_reference(otel_ctx, body)
        assert len(outcomes) == 2, name
        assert outcomes[0] == outcomes[1], name
        checked += 1
    engine.clear()
    assert checked == 18
