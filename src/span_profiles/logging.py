"""Log records that link to traces and profiles: ``trace_id``, ``span_id`` and ``profile_id``.

Standard library::

    import logging
    from span_profiles.logging import SpanProfilesLogFilter

    handler = logging.StreamHandler()
    handler.addFilter(SpanProfilesLogFilter())
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(message)s trace_id=%(trace_id)s span_id=%(span_id)s "
        "profile_id=%(profile_id)s"
    ))

structlog::

    structlog.configure(processors=[add_span_profiles_ids, ..., JSONRenderer()])

Which id finds the profile: ``profile_id``. It is the id the request's CPU samples are labelled
with (their ``span_id`` label), which is the ``pyroscope.profile.id`` of the span Grafana offers
"Profiles for this span" on: the local root span, i.e. the request's server span (with
``scope="all"``, the current span itself). ``span_id`` is the innermost current span's, for
trace correlation; inside a request it is often a child span whose id labels no sample. FastAPI's
own telemetry (recent FastAPI versions) is one such case: in an endpoint,
``trace.get_current_span()`` is FastAPI's ``fastapi.endpoint`` child span, not the request span
that span-profiles labels samples with. Use :func:`current_profile_id` (or ``profile_id`` in the
log record) wherever you want the id that selects the request's profile.

``trace_id`` (32 hex) and ``span_id`` (16 hex) are the current span's; ``profile_id`` (16 hex) is
the labelling span's. Each is ``""`` when there is no such span.
"""

from __future__ import annotations

import logging as _logging
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

from span_profiles._core import engine

__all__ = [
    "FIELDS",
    "SpanProfilesLogFilter",
    "add_span_profiles_ids",
    "current_ids",
    "current_profile_id",
]

FIELDS = ("trace_id", "span_id", "profile_id")
"""The names this module adds to log records and structlog event dicts."""


def current_profile_id() -> str:
    """The id the current context's CPU samples are labelled with (16 hex), or ``""``.

    That is the request span's id (the local root's; the current span's with ``scope="all"``),
    whatever child span is current, and the span's ``pyroscope.profile.id``. ``""`` outside a
    labelled span, or once that span has ended.
    """
    holder = engine.current_holder()
    return holder.profile_id if holder is not None and holder.labels else ""


def current_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, and :func:`current_profile_id`.

    Each is ``""`` when there is no such span.
    """
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {"trace_id": "", "span_id": "", "profile_id": ""}
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "profile_id": current_profile_id(),
    }


class SpanProfilesLogFilter(_logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``profile_id`` to every record; never drops one.

    Attach it to a handler (it then sees records from every logger) or to a logger. Values a
    record already has (``extra={"trace_id": ...}``) are kept.
    """

    def filter(self, record: _logging.LogRecord) -> bool:
        """Add the ids to ``record`` and let it through."""
        for key, value in current_ids().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def add_span_profiles_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add ``trace_id``, ``span_id`` and ``profile_id`` to the event dict.

    Keys the event already has are kept.
    """
    for key, value in current_ids().items():
        event_dict.setdefault(key, value)
    return event_dict
