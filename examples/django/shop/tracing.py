"""The OpenTelemetry tracer provider, set before Django loads (asgi.py, wsgi.py, manage.py)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "example-django"


def setup_tracing() -> None:
    """Set the global SDK provider once; ``service.name`` becomes the profiles' service_name.

    Grafana finds a span's profile through it. Add your exporter (OTLP, console...) here.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        resource = Resource.create({"service.name": SERVICE_NAME})
        trace.set_tracer_provider(TracerProvider(resource=resource))
