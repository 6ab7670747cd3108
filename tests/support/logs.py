"""A logger that formats the ids span-profiles adds to log records."""

from __future__ import annotations

import io
import logging

from span_profiles.logging import SpanProfilesLogFilter


def make_logger(stream: io.StringIO) -> logging.Logger:
    """A private logger whose handler formats the three documented fields."""
    logger = logging.getLogger(f"span_profiles.tests.{id(stream)}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(SpanProfilesLogFilter())
    handler.setFormatter(logging.Formatter("%(trace_id)s %(span_id)s %(profile_id)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger
