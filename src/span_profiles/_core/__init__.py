"""Framework-free core: labels derived from the OpenTelemetry context, the span processor, sinks.

Nothing in this package imports a web framework, an event-loop backend or the profiling agent at
import time.
"""
