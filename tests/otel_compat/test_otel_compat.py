"""The canary: every private OpenTelemetry name span-profiles relies on is still there.

When an OpenTelemetry upgrade removes one, this file fails and names it; the fix belongs in
``span_profiles/_otel_compat.py`` alone.
"""

from __future__ import annotations

import ast
from contextvars import ContextVar
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from span_profiles import _otel_compat
from span_profiles._core.patching import Patches


def test_span_key_finds_the_current_span_in_a_context() -> None:
    """``SPAN_KEY`` is the key ``trace.set_span_in_context`` writes the span under."""
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    ctx = trace.set_span_in_context(span)
    assert ctx.get(_otel_compat.SPAN_KEY) is span, (
        "opentelemetry.trace.propagation._SPAN_KEY no longer names the span in a Context"
    )


def test_runtime_context_has_a_current_context_var() -> None:
    """The runtime context keeps the current Context in a ContextVar we can read directly."""
    runtime = _otel_compat.runtime_context()
    assert runtime is otel_context._RUNTIME_CONTEXT
    var = _otel_compat.current_context_var(runtime)
    assert isinstance(var, ContextVar), (
        "opentelemetry.context._RUNTIME_CONTEXT has no _current_context ContextVar any more"
    )
    token = otel_context.attach(otel_context.set_value("canary", 1))
    try:
        assert var.get() is otel_context.get_current()
    finally:
        otel_context.detach(token)


def test_runtime_context_class_is_the_runtime_contexts_base() -> None:
    """``RuntimeContext`` is the base class OTel's runtime context derives from (the hook wraps it)."""
    runtime = otel_context._RUNTIME_CONTEXT
    unwrapped = getattr(runtime, "inner", runtime)
    assert isinstance(unwrapped, _otel_compat.RuntimeContext), (
        "opentelemetry.context.context._RuntimeContext is no longer the runtime context's base"
    )


def test_no_private_otel_name_outside_this_module() -> None:
    """Only ``_otel_compat`` imports a private OpenTelemetry name (an ``_``-prefixed one)."""
    src = Path(_otel_compat.__file__).parent
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "_otel_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                parts = (node.module or "").split(".")
                if private or any(part.startswith("_") for part in parts):
                    found.append(f"{path.relative_to(src)}:{node.lineno} {node.module} {private}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "opentelemetry" and any(p.startswith("_") for p in parts):
                        found.append(f"{path.relative_to(src)}:{node.lineno} {alias.name}")
    assert found == []


def test_runtime_context_can_be_replaced_and_restored() -> None:
    """Replacing the runtime context through Patches is seen by OTel and undone exactly."""
    original = _otel_compat.runtime_context()
    patches = Patches()
    marker = object()
    _otel_compat.set_runtime_context(patches, marker)
    try:
        assert otel_context._RUNTIME_CONTEXT is marker
    finally:
        patches.undo()
    assert _otel_compat.runtime_context() is original


def test_span_processor_can_be_removed() -> None:
    """``remove_span_processor`` takes a processor off an SDK provider, leaving the others."""
    provider = TracerProvider()
    kept = SimpleSpanProcessor(InMemorySpanExporter())
    removed = SimpleSpanProcessor(InMemorySpanExporter())
    provider.add_span_processor(kept)
    provider.add_span_processor(removed)
    assert _otel_compat.remove_span_processor(provider, removed), (
        "TracerProvider._active_span_processor._span_processors is gone"
    )
    assert provider._active_span_processor._span_processors == (kept,)


def test_unknown_provider_is_left_alone() -> None:
    """A provider without the SDK's internals is reported, not broken."""
    assert not _otel_compat.remove_span_processor(object(), object())


def test_http_semconv_mode_is_readable() -> None:
    """OTel's HTTP semantic-convention opt-in mode can be read (needs opentelemetry-instrumentation)."""
    pytest.importorskip("opentelemetry.instrumentation._semconv")
    from opentelemetry.instrumentation._semconv import _StabilityMode

    assert isinstance(_otel_compat.http_semconv_mode(), _StabilityMode)


def _attrs_with_everything() -> dict[str, object]:
    return {
        "http.method": "GET",
        "http.request.method": "GET",
        "http.scheme": "http",
        "url.scheme": "http",
        "http.status_code": 200,
        "http.response.status_code": 200,
        "http.route": "/items/{id}",
        "http.target": "/items/1",
        "net.peer.ip": "127.0.0.1",
    }


@pytest.mark.parametrize("protocol", ["asgi", "wsgi"])
def test_server_metric_attribute_filters(protocol: str) -> None:
    """The ASGI and WSGI modules' _parse_duration_attrs / _parse_active_request_count_attrs."""
    module = pytest.importorskip(f"opentelemetry.instrumentation.{protocol}")
    attrs = _attrs_with_everything()
    old = _otel_compat.server_duration_attrs(module, attrs, new=False)
    new = _otel_compat.server_duration_attrs(module, attrs, new=True)
    assert old == {"http.method": "GET", "http.scheme": "http", "http.status_code": 200}, (
        f"opentelemetry.instrumentation.{protocol}._parse_duration_attrs changed"
    )
    assert new == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/items/{id}",
    }
    from opentelemetry.instrumentation._semconv import _StabilityMode

    active = _otel_compat.active_request_attrs(module, attrs, _StabilityMode.HTTP)
    assert active == {"http.request.method": "GET", "url.scheme": "http"}, (
        f"opentelemetry.instrumentation.{protocol}._parse_active_request_count_attrs changed"
    )


def test_asgi_route_target_and_http_target() -> None:
    """asgi._collect_target_attribute, _semconv._set_http_target and util.http._parse_url_query."""
    pytest.importorskip("opentelemetry.instrumentation.asgi")
    from opentelemetry.instrumentation._semconv import _StabilityMode

    class Route:
        path_format = "/items/{id}"

    assert _otel_compat.asgi_route_target({"root_path": "/api", "route": Route()}) == (
        "/api/items/{id}"
    )
    assert _otel_compat.asgi_route_target({}) is None
    attrs: dict[str, object] = {}
    _otel_compat.set_http_target(attrs, "/items/{id}?q=1", _StabilityMode.HTTP_DUP)
    assert attrs == {
        "http.target": "/items/{id}?q=1",
        "url.path": "/items/{id}",
        "url.query": "q=1",
    }


def test_reports_new() -> None:
    """_semconv._report_new tells the stable conventions apart from the old ones."""
    pytest.importorskip("opentelemetry.instrumentation._semconv")
    from opentelemetry.instrumentation._semconv import _StabilityMode

    assert _otel_compat.reports_new(_StabilityMode.HTTP)
    assert _otel_compat.reports_new(_StabilityMode.HTTP_DUP)
    assert not _otel_compat.reports_new(_StabilityMode.DEFAULT)


@pytest.mark.parametrize(
    ("protocol", "names"),
    [
        (
            "asgi",
            [
                "excluded_urls",
                "default_span_details",
                "server_request_hook",
                "client_request_hook",
                "client_response_hook",
                "http_capture_headers_server_request",
                "http_capture_headers_server_response",
                "http_capture_headers_sanitize_fields",
                "duration_histogram_old",
                "duration_histogram_new",
                "active_requests_counter",
                "server_response_size_histogram",
                "server_response_body_size_histogram",
                "server_request_size_histogram",
                "server_request_body_size_histogram",
                "app",
            ],
        ),
        (
            "wsgi",
            [
                "request_hook",
                "response_hook",
                "duration_histogram_old",
                "duration_histogram_new",
                "active_requests_counter",
                "wsgi",
            ],
        ),
    ],
)
def test_otel_middleware_exposes_what_it_resolved(protocol: str, names: list[str]) -> None:
    """span_profiles._otel_http reads these attributes of OTel's middleware after construction."""
    module = pytest.importorskip(f"opentelemetry.instrumentation.{protocol}")

    async def asgi_app(scope: object, receive: object, send: object) -> None:
        return None

    middleware = module.OpenTelemetryMiddleware(asgi_app if protocol == "asgi" else print)
    missing = [name for name in names if not hasattr(middleware, name)]
    assert not missing, f"OTel's {protocol} OpenTelemetryMiddleware no longer has {missing}"
