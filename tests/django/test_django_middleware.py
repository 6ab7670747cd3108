"""span_profiles.django: spans and labels under Django's WSGI and ASGI handlers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("django.conf")

from django.test import AsyncClient, Client, override_settings
from opentelemetry.trace import SpanKind, StatusCode

import span_profiles
from span_profiles import PROFILE_ID_ATTRIBUTE, SettingsError
from span_profiles.django import SpanProfilesMiddleware, django_settings
from tests.support.apps import django_urls as urls
from tests.support.asgi import Probe, hex_id, only_span, span_names_applied


@pytest.fixture
def probe(instrumented: Any) -> Any:
    """A probe the test URLconf's views report to."""
    probe = Probe(instrumented.sink)
    urls.set_probe(probe)
    yield probe
    urls.set_probe(lambda where: None)


def test_sync_view_under_wsgi(instrumented: Any, probe: Probe) -> None:
    """A sync view (WSGI handler) carries the span renamed to its route before it runs."""
    response = Client().get("/items/7")
    assert response.json()["pk"] == 7
    span = only_span(instrumented.exporter)
    assert span.name == "GET items/<int:pk>"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.route"] == "items/<int:pk>"
    assert span.attributes[PROFILE_ID_ATTRIBUTE] == hex_id(span)
    probe.assert_all(span, "GET items/<int:pk>", count=1)
    assert instrumented.sink.current() == {}


def test_root_and_included_routes(instrumented: Any, probe: Probe) -> None:
    """The empty root pattern is named "/", and included patterns are joined."""
    Client().get("/")
    Client().get("/api/things/abc/")
    names = sorted(s.name for s in instrumented.exporter.get_finished_spans())
    assert names == ["GET /", "GET api/things/<slug:slug>/"]


def test_unmatched_url_is_named_by_method(instrumented: Any, probe: Probe) -> None:
    """A 404 keeps the method-only name."""
    assert Client().get("/nowhere/1").status_code == 404
    assert only_span(instrumented.exporter).name == "GET"


def test_view_exception_is_recorded(instrumented: Any, probe: Probe) -> None:
    """A view's exception is recorded on the span while Django answers 500."""
    response = Client(raise_request_exception=False).get("/boom")
    assert response.status_code == 500
    span = only_span(instrumented.exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert "exception" in [e.name for e in span.events]


def test_remote_parent_is_honoured(instrumented: Any, probe: Probe) -> None:
    """A traceparent header becomes the span's remote parent."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    Client().get("/items/1", HTTP_TRACEPARENT=f"00-{trace_id}-b7ad6b7169203331-01")
    span = only_span(instrumented.exporter)
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert span.parent.is_remote


def test_sync_streaming_response_is_labelled_until_closed(instrumented: Any, probe: Probe) -> None:
    """Chunks of a streaming response carry the labels; the span ends when Django closes it."""
    response = Client().get("/stream")
    assert instrumented.exporter.get_finished_spans() == ()
    assert b"".join(response.streaming_content) == b"xxx"
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET stream", count=3)


@pytest.mark.anyio
async def test_async_view_under_asgi(instrumented: Any, probe: Probe) -> None:
    """An async view (ASGI handler) keeps the labels across awaits."""
    response = await AsyncClient().get("/async-items/3")
    assert response.status_code == 200
    span = only_span(instrumented.exporter)
    assert span.name == "GET async-items/<int:pk>"
    probe.assert_all(span, "GET async-items/<int:pk>", count=3)


@pytest.mark.anyio
async def test_sync_view_under_asgi_runs_labelled_in_a_thread(
    instrumented: Any, probe: Probe
) -> None:
    """A sync view under ASGI runs in an asgiref thread that shows the request's labels."""
    response = await AsyncClient().get("/items/9")
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET items/<int:pk>", count=1)
    assert response.json()["thread"] != threading.get_ident()


@pytest.mark.anyio
async def test_async_streaming_response_under_asgi(instrumented: Any, probe: Probe) -> None:
    """An async streaming body is produced under the request's labels."""
    response = await AsyncClient().get("/async-stream")
    chunks = [chunk async for chunk in response.streaming_content]
    assert b"".join(chunks) == b"xxx"
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET async-stream", count=3)


@pytest.mark.anyio
async def test_asgi_middleware_outside_gives_one_span(instrumented: Any, probe: Probe) -> None:
    """Our ASGI middleware around Django's ASGI app owns the span; Django's one renames it."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("opentelemetry.instrumentation.asgi")
    from django.core.asgi import get_asgi_application

    from span_profiles.asgi import SpanProfilesMiddleware as ASGIMiddleware

    app = ASGIMiddleware(get_asgi_application(), tracer_provider=instrumented.provider)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/async-items/4")
    assert response.status_code == 200
    span = only_span(instrumented.exporter)
    assert span.name == "GET async-items/<int:pk>"
    probe.assert_all(span, "GET async-items/<int:pk>", count=3)


def test_settings_come_from_django_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPAN_PROFILES beats the environment; explicit values beat SPAN_PROFILES."""
    monkeypatch.setenv("SPAN_PROFILES_SCOPE", "all")
    assert django_settings().scope == "all"
    with override_settings(SPAN_PROFILES={"scope": "root", "application_name": "shop"}):
        settings = django_settings()
        assert (settings.scope, settings.application_name) == ("root", "shop")
        assert django_settings(scope="all").scope == "all"


@pytest.mark.parametrize(
    ("value", "named"),
    [({"sample_rate": 0}, "sample_rate"), ({"colour": "red"}, "colour"), ("root", "dict")],
)
def test_bad_settings_fail_middleware_construction(value: Any, named: str) -> None:
    """An invalid SPAN_PROFILES raises SettingsError naming the culprit when Django loads us."""
    with override_settings(SPAN_PROFILES=value), pytest.raises(SettingsError, match=named):
        SpanProfilesMiddleware(lambda request: None)


def test_app_config_ready_validates_and_instruments() -> None:
    """The optional app resolves settings at start-up: bad ones raise, good ones instrument."""
    import span_profiles.django as package
    from span_profiles.django.apps import SpanProfilesConfig
    from span_profiles.testing import RecordingSink

    span_profiles.uninstrument()
    config = SpanProfilesConfig("span_profiles.django", package)
    with override_settings(SPAN_PROFILES={"scope": "nope"}), pytest.raises(SettingsError):
        config.ready()
    assert not span_profiles.is_instrumented()
    with override_settings(SPAN_PROFILES={"enabled": False}):
        config.ready()
    assert not span_profiles.is_instrumented()
    try:
        span_profiles.instrument(sink=RecordingSink())  # what ready() would do, minus the agent
        config.ready()
        assert span_profiles.is_instrumented()
    finally:
        span_profiles.uninstrument()


def test_disabled_middleware_passes_through(instrumented: Any, probe: Probe) -> None:
    """SPAN_PROFILES={"enabled": False} makes the middleware start no span."""
    with override_settings(SPAN_PROFILES={"enabled": False}):
        response = Client().get("/items/1")
    assert response.status_code == 200
    assert instrumented.exporter.get_finished_spans() == ()


PROBING = [
    "span_profiles.django.SpanProfilesMiddleware",
    "tests.support.apps.django_urls.ProbingMiddleware",
]


def test_middlewares_before_routing_already_carry_the_route(
    instrumented: Any, probe: Probe
) -> None:
    """The resolver is asked up front: a later middleware's samples carry the route already."""
    with override_settings(MIDDLEWARE=PROBING):
        assert Client().get("/items/7").status_code == 200
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET items/<int:pk>", count=2)
    assert span_names_applied(instrumented.sink, hex_id(span)) == {"GET items/<int:pk>"}


@pytest.mark.anyio
async def test_async_chain_names_the_span_before_routing(instrumented: Any, probe: Probe) -> None:
    """Under the ASGI handler too (a sync middleware after ours runs in a thread)."""
    with override_settings(MIDDLEWARE=PROBING):
        response = await AsyncClient().get("/async-items/4")
    assert response.status_code == 200
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET async-items/<int:pk>", count=4)
    assert span_names_applied(instrumented.sink, hex_id(span)) == {"GET async-items/<int:pk>"}


def test_framework_settings_reach_adapter_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPAN_PROFILES goes through the resolution explicit options use, adapter options included."""
    from span_profiles import _adapter

    monkeypatch.setitem(_adapter.ADAPTER_OPTIONS, "excluded_urls", split_urls)
    with override_settings(SPAN_PROFILES={"excluded_urls": "health,metrics", "scope": "all"}):
        middleware = SpanProfilesMiddleware(lambda request: None)
    assert middleware._core.options == {"excluded_urls": ["health", "metrics"]}
    assert middleware.settings.scope == "all"


def split_urls(value: Any) -> list[str]:
    """An adapter option parser; like every parser, it accepts its own output unchanged."""
    return list(value) if isinstance(value, list) else str(value).split(",")
