"""span-profiles: the CPU profile of exactly one request, linked from its trace span.

Labels pyroscope-io samples with the OpenTelemetry span that is current on each thread, kept right
across asyncio/trio task switches and worker threads. Start with :func:`instrument`.
"""

from __future__ import annotations

from span_profiles._core.processor import PROFILE_ID_ATTRIBUTE as PROFILE_ID_ATTRIBUTE
from span_profiles._core.sinks import Labels as Labels
from span_profiles._core.sinks import NullSink as NullSink
from span_profiles._core.sinks import PyroscopeSink as PyroscopeSink
from span_profiles._core.sinks import Sink as Sink
from span_profiles._core.sinks import ThreadLabelSink as ThreadLabelSink
from span_profiles._instrument import SpanProfilesProcessor as SpanProfilesProcessor
from span_profiles._instrument import instrument as instrument
from span_profiles._instrument import is_instrumented as is_instrumented
from span_profiles._instrument import uninstrument as uninstrument
from span_profiles._placement import Placement as Placement
from span_profiles._placement import current_placement as current_placement
from span_profiles._profiler import pin_current_thread as pin_current_thread
from span_profiles._profiler import profiler_running as profiler_running
from span_profiles._profiler import start_profiler as start_profiler
from span_profiles._profiler import stop_profiler as stop_profiler
from span_profiles._settings import Settings as Settings
from span_profiles._settings import SettingsError as SettingsError

__version__ = "0.1.0"

__all__ = [
    "PROFILE_ID_ATTRIBUTE",
    "Labels",
    "NullSink",
    "Placement",
    "PyroscopeSink",
    "Settings",
    "SettingsError",
    "Sink",
    "SpanProfilesProcessor",
    "ThreadLabelSink",
    "__version__",
    "current_placement",
    "instrument",
    "is_instrumented",
    "pin_current_thread",
    "profiler_running",
    "start_profiler",
    "stop_profiler",
    "uninstrument",
]
