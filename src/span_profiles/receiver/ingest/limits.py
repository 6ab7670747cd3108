"""What one request may hold, and how long a client may take to send it.

Limits follow Pyroscope's distributor defaults and its reject-or-truncate choice: label sizes and
counts, samples per profile and profile size refuse the whole request; stack depth and symbol length
truncate. The timeouts bound what a slow or silent client can hold: a stalled head or body is
answered or closed within a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["MAX_SAMPLE_COUNT", "Limits"]

MAX_SAMPLE_COUNT = 2**32
"""Largest sample count one sample may carry (2**32 periods is 497 days of CPU at 100 Hz). With it,
sums over any store that fits on a disk stay far inside SQLite's 64-bit integers."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and how long a client may take to send it.

    The defaults are Pyroscope's (``validation.Limits``) where it has one. ``reject`` limits refuse
    the whole request with a Connect error; ``truncate`` limits shorten and keep.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    """Request body as sent (compressed), reject (413)."""
    max_decompressed_bytes: int = 64 * 1024 * 1024
    """Everything one request decompresses to, body and embedded profiles together, reject (413)."""
    max_profile_bytes: int = 4 * 1024 * 1024
    """One uncompressed pprof profile (Pyroscope ``max_profile_size_bytes``), reject (413)."""
    max_samples_per_profile: int = 16_000
    """Samples in one profile (``max_profile_stacktrace_samples``), reject (400)."""
    max_stack_depth: int = 1000
    """Frames per stack (``max_profile_stacktrace_depth``), truncate: the leaf side is kept."""
    max_frames_per_request: int = 4_000_000
    """Frames of all samples of one request after truncation (bounds lines x references), reject (413)."""
    max_symbol_length: int = 65_535
    """Function and file names (``max_profile_symbol_value_length``), truncate."""
    max_label_name_length: int = 1024
    """Series and sample label names (``max_label_name_length``), reject (400)."""
    max_label_value_length: int = 2048
    """Series and sample label values (``max_label_value_length``), reject (400)."""
    max_series_labels: int = 30
    """Label names per series (``max_label_names_per_series``), reject (400)."""
    max_sample_labels: int = 100
    """Labels per sample (``max_profile_stacktrace_sample_labels``), reject (400)."""
    header_timeout: float = 4.0
    """Seconds from connecting (or from the end of the previous reply) to a complete request head;
    then the connection closes, however many bytes trickled in."""
    body_idle_timeout: float = 4.0
    """Seconds the body may go without a byte arriving (a ``Content-Length`` that promises more
    than is sent); then 408 and the connection closes."""
    body_timeout: float = 30.0
    """Seconds to receive the whole body once the head arrived; then 408 and the connection closes."""

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be positive")
