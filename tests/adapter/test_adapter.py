"""The adapter core: one option resolution for arguments and framework settings; early routes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation")

from span_profiles import SettingsError, _adapter
from span_profiles._adapter import AdapterCore, EarlyRoute, resolve_options
from span_profiles._core import guard


def test_explicit_options_beat_framework_settings_which_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The precedence of the settings table, for both sources at once."""
    monkeypatch.setenv("SPAN_PROFILES_SCOPE", "all")
    monkeypatch.setenv("PYROSCOPE_SAMPLE_RATE", "7")
    settings, options = resolve_options(
        {"application_name": "explicit"},
        {"application_name": "framework", "sample_rate": 50},
    )
    assert (settings.application_name, settings.sample_rate, settings.scope) == (
        "explicit",
        50,
        "all",
    )
    assert options == {}


def test_an_unknown_framework_setting_is_named_with_its_origin() -> None:
    """A typo in SPAN_PROFILES / app.config fails with the key and where it came from."""
    with pytest.raises(SettingsError, match=r"'sampel_rate' in settings\.SPAN_PROFILES"):
        resolve_options({}, {"sampel_rate": 5}, framework_name="settings.SPAN_PROFILES")


def test_adapter_options_resolve_from_arguments_and_framework_settings_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An option registered in ADAPTER_OPTIONS is accepted from both sources, explicit first."""
    monkeypatch.setitem(_adapter.ADAPTER_OPTIONS, "excluded_urls", split_urls)
    _, from_framework = resolve_options({}, {"excluded_urls": "a,b"})
    assert from_framework == {"excluded_urls": ["a", "b"]}
    settings, both = resolve_options({"excluded_urls": "c"}, {"excluded_urls": "a", "scope": "all"})
    assert both == {"excluded_urls": ["c"]}
    assert settings.scope == "all"


def test_an_invalid_adapter_option_names_its_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parser's ValueError becomes a SettingsError saying which source held the value."""

    def positive(value: Any) -> int:
        if int(value) <= 0:
            raise ValueError("expected a positive integer")
        return int(value)

    monkeypatch.setitem(_adapter.ADAPTER_OPTIONS, "limit", positive)
    with pytest.raises(SettingsError, match=r"Flask app\.config limit=-1: expected a positive"):
        resolve_options({}, {"limit": -1}, framework_name="Flask app.config")


def test_resolved_settings_are_only_overridden_by_explicit_options() -> None:
    """A thin adapter's resolved settings stand in for framework settings and the environment."""
    base, _ = resolve_options({"scope": "all"})
    settings, _ = resolve_options({"span_name": False}, {"scope": "root"}, settings=base)
    assert (settings.scope, settings.span_name) == ("all", False)


def test_a_failing_route_lookup_is_logged_once_and_switched_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request goes on without an early name; the broken lookup is not called again."""
    guard.reset()
    calls: list[object] = []

    def broken(request: object) -> str | None:
        calls.append(request)
        raise RuntimeError("router changed")

    find = EarlyRoute(broken)
    with caplog.at_level(logging.ERROR, logger="span_profiles"):
        assert find("one") is None
        assert find("two") is None
    assert calls == ["one"]
    assert "finding the route before the application runs" in caplog.text
    guard.reset()


def test_a_route_lookup_finding_nothing_gives_no_route() -> None:
    """None and empty answers both mean "no route": the span keeps its method name."""
    assert EarlyRoute(lambda _: "")("x") is None
    assert EarlyRoute(None)("x") is None
    assert EarlyRoute(lambda _: "/a/{b}")("x") == "/a/{b}"


def test_the_core_passes_an_adopted_span_its_attributes(instrumented: Any) -> None:
    """begin() on an outer SERVER span adopts it and adds the collected attributes."""
    from opentelemetry.trace import SpanKind

    core = AdapterCore.create("tests", tracer_provider=instrumented.provider)
    with instrumented.tracer.start_as_current_span("outer", kind=SpanKind.SERVER) as outer:
        request = core.begin(
            method="GET",
            carrier={},
            getter=None,
            collect=lambda carrier, semconv: {"http.request.method": "GET"},
        )
        assert request is not None
        assert request.span is outer
        assert not request.owned
    (span,) = instrumented.exporter.get_finished_spans()
    assert span.attributes["http.request.method"] == "GET"


def split_urls(value: Any) -> list[str]:
    """An adapter option parser; like every parser, it accepts its own output unchanged."""
    return list(value) if isinstance(value, list) else str(value).split(",")
