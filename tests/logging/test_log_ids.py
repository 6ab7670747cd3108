"""span_profiles.logging: trace, span and profile ids on stdlib log records and structlog events."""

from __future__ import annotations

import io
from typing import Any

import pytest

from span_profiles.logging import add_span_profiles_ids, current_ids
from tests.support.logs import make_logger


def test_records_carry_the_current_span_and_its_roots_profile_id(instrumented: Any) -> None:
    """Inside a child span: its own trace and span ids, and the local root's profile id."""
    stream = io.StringIO()
    logger = make_logger(stream)
    tracer = instrumented.tracer
    with (
        tracer.start_as_current_span("root") as root,
        tracer.start_as_current_span("child") as child,
    ):
        logger.info("hello")
    ctx = child.get_span_context()
    expected = (
        f"{ctx.trace_id:032x} {ctx.span_id:016x} {root.get_span_context().span_id:016x} hello\n"
    )
    assert stream.getvalue() == expected


def test_records_outside_spans_get_empty_ids(instrumented: Any) -> None:
    """Without a current span the fields exist and are empty, so formats never fail."""
    stream = io.StringIO()
    make_logger(stream).info("bare")
    assert stream.getvalue() == "   bare\n"


def test_explicit_extra_values_are_kept(instrumented: Any) -> None:
    """A value passed with extra= is not overwritten by the filter."""
    stream = io.StringIO()
    with instrumented.tracer.start_as_current_span("root"):
        make_logger(stream).info("x", extra={"profile_id": "mine"})
    assert stream.getvalue().split()[2] == "mine"


def test_profile_id_is_empty_after_the_root_ended(instrumented: Any) -> None:
    """Once the local root has ended it has no profile, even if its context is still current."""
    from opentelemetry import trace

    span = instrumented.tracer.start_span("root")
    span.end()
    with trace.use_span(span):
        ids = current_ids()
    assert ids["span_id"] == format(span.get_span_context().span_id, "016x")
    assert ids["profile_id"] == ""


def test_structlog_processor_adds_ids_to_the_event_dict(instrumented: Any) -> None:
    """The processor adds the three ids and keeps keys the event already has."""
    with instrumented.tracer.start_as_current_span("root") as root:
        event = add_span_profiles_ids(None, "info", {"event": "x", "trace_id": "keep"})
    span_id = format(root.get_span_context().span_id, "016x")
    assert event == {"event": "x", "trace_id": "keep", "span_id": span_id, "profile_id": span_id}


def test_structlog_end_to_end(instrumented: Any) -> None:
    """With structlog installed, a configured logger renders the ids."""
    structlog = pytest.importorskip("structlog")
    captured: list[Any] = []
    logger = structlog.wrap_logger(
        None,
        processors=[add_span_profiles_ids, lambda _l, _m, event: captured.append(event) or ""],
    )
    with instrumented.tracer.start_as_current_span("root") as root:
        logger.info("hi")
    assert captured[0]["profile_id"] == format(root.get_span_context().span_id, "016x")
