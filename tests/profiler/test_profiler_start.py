"""start_profiler()/stop_profiler() against a fake agent: settings, defaults, failures, idempotence."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import ProxyTracerProvider

import span_profiles
from span_profiles import SettingsError, _samplers
from span_profiles._profiler import profiler_running, start_profiler, stop_profiler
from span_profiles.gunicorn import make_post_fork, post_fork
from tests.support.profiler import FakeAgent


def provider(service_name: str) -> TracerProvider:
    """An SDK provider whose resource has ``service.name``."""
    return TracerProvider(resource=Resource.create({"service.name": service_name}))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYROSCOPE_SAMPLE_RATE", "fast"),
        ("PYROSCOPE_SAMPLE_RATE", "0"),
        ("PYROSCOPE_UPLOAD_INTERVAL", "-1"),
        ("PYROSCOPE_SERVER_ADDRESS", "ftp://example"),
        ("PYROSCOPE_TAGS", "region"),
        ("PYROSCOPE_TAGS", "bad-name=1"),
        ("PYROSCOPE_HTTP_HEADERS", "X-A"),
        ("PYROSCOPE_ENABLE_LOGGING", "loud"),
        ("SPAN_PROFILES_PROFILER", "sometimes"),
        ("SPAN_PROFILES_PIN_CPU", "cpu0"),
    ],
)
def test_invalid_environment_names_the_variable(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """An invalid profiler setting in the environment raises SettingsError naming the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        start_profiler(tracer_provider=provider("svc"))
    assert fake_agent.configure_calls == []


def test_unknown_argument_is_a_settings_error(fake_agent: FakeAgent) -> None:
    """A keyword that is no Settings field raises SettingsError listing the known ones."""
    with pytest.raises(SettingsError, match="sample_hz"):
        start_profiler(sample_hz=100)


def test_arguments_reach_configure_and_beat_the_environment(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explicit arguments win over PYROSCOPE_* variables, which win over defaults."""
    monkeypatch.setenv("PYROSCOPE_SAMPLE_RATE", "250")
    monkeypatch.setenv("PYROSCOPE_UPLOAD_INTERVAL", "3")
    monkeypatch.setenv("PYROSCOPE_TAGS", "region=eu,tier=web")
    assert start_profiler(
        tracer_provider=provider("svc"),
        upload_interval=5,
        server_address="http://127.0.0.1:9/",
        tenant_id="t1",
        http_headers={"X-A": "1"},
        pin_cpu="off",
    )
    (call,) = fake_agent.configure_calls
    assert call["sample_rate"] == 250
    assert call["upload_interval"] == 5
    assert call["server_address"] == "http://127.0.0.1:9"
    assert call["tags"] == {"region": "eu", "tier": "web"}
    assert call["tenant_id"] == "t1"
    assert call["http_headers"] == {"X-A": "1"}
    assert call["application_name"] == "svc"


def test_agent_options_reach_configure_with_their_defaults(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gil_only, oncpu, report_* and line_no (the agent's enum) are passed on, agent defaults."""
    line_no = types.SimpleNamespace(LastInstruction="last", NoLine="none")
    monkeypatch.setattr(fake_agent, "LineNo", line_no, raising=False)
    assert start_profiler(tracer_provider=provider("svc"), pin_cpu="off")
    stop_profiler()
    monkeypatch.setenv("PYROSCOPE_GIL_ONLY", "false")
    monkeypatch.setenv("PYROSCOPE_REPORT_THREAD_NAME", "yes")
    assert start_profiler(
        tracer_provider=provider("svc"), pin_cpu="off", line_no=False, oncpu=False, report_pid=True
    )
    default, changed = fake_agent.configure_calls
    options = ("gil_only", "oncpu", "report_pid", "report_thread_id", "report_thread_name")
    assert [default[k] for k in options] == [True, True, False, False, False]
    assert default["line_no"] == "last"
    assert [changed[k] for k in options] == [False, False, True, False, True]
    assert changed["line_no"] == "none"


def test_invalid_agent_option_is_a_settings_error(fake_agent: FakeAgent) -> None:
    """A non-boolean gil_only is refused before the agent is touched."""
    with pytest.raises(SettingsError, match="gil_only"):
        start_profiler(tracer_provider=provider("svc"), gil_only="sometimes")
    assert fake_agent.configure_calls == []


def test_settings_object_is_used_and_overridden(fake_agent: FakeAgent) -> None:
    """A Settings object supplies values; explicit arguments override single fields of it."""
    from span_profiles import Settings

    settings = Settings.resolve(
        {"sample_rate": 50, "upload_interval": 7, "sampler": "pyroscope"}, environ={}
    )
    assert start_profiler(settings=settings, upload_interval=2, tracer_provider=provider("a"))
    (call,) = fake_agent.configure_calls
    assert (call["sample_rate"], call["upload_interval"]) == (50, 2)


def test_application_name_falls_back_to_otel_service_name(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an SDK provider, OTEL_SERVICE_NAME names the application."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert start_profiler(tracer_provider=ProxyTracerProvider())
    assert fake_agent.configure_calls[0]["application_name"] == "from-env"


def test_application_name_mismatch_warns_once(
    fake_agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """An explicit name unlike the provider's service.name is used, with one warning."""
    caplog.set_level(logging.WARNING, logger="span_profiles")
    assert start_profiler(tracer_provider=provider("checkout"), application_name="shop")
    stop_profiler()
    assert start_profiler(tracer_provider=provider("checkout"), application_name="shop")
    assert [c["application_name"] for c in fake_agent.configure_calls] == ["shop", "shop"]
    warnings = [r for r in caplog.records if "differs" in r.getMessage()]
    assert len(warnings) == 1
    assert "checkout" in warnings[0].getMessage()


def test_matching_application_name_with_tags_does_not_warn(
    fake_agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """``name{k=v}`` counts as ``name`` when compared with service.name."""
    caplog.set_level(logging.WARNING, logger="span_profiles")
    assert start_profiler(tracer_provider=provider("shop"), application_name="shop{env=prod}")
    assert not caplog.records


def test_second_start_is_a_no_op(fake_agent: FakeAgent) -> None:
    """Starting twice configures the agent once and reports it running both times."""
    assert start_profiler(tracer_provider=provider("svc"))
    assert start_profiler(tracer_provider=provider("svc"), sample_rate=999)
    assert len(fake_agent.configure_calls) == 1
    assert profiler_running()


def test_stop_flushes_and_allows_a_new_start(fake_agent: FakeAgent) -> None:
    """stop_profiler() calls pyroscope.shutdown() once; a later start configures again."""
    assert not stop_profiler()
    assert start_profiler(tracer_provider=provider("svc"))
    assert stop_profiler()
    assert not stop_profiler()
    assert fake_agent.shutdown_calls == 1
    assert not profiler_running()
    assert start_profiler(tracer_provider=provider("svc"))
    assert len(fake_agent.configure_calls) == 2


@pytest.mark.parametrize(
    ("options", "environment"),
    [
        ({"profiler": "off"}, {}),
        ({}, {"SPAN_PROFILES_PROFILER": "off"}),
        ({"enabled": False}, {}),
    ],
)
def test_profiler_off_starts_nothing(
    fake_agent: FakeAgent,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    environment: dict[str, str],
) -> None:
    """profiler='off' (argument or env), or enabled=False with 'auto', returns False unconfigured."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert not start_profiler(tracer_provider=provider("svc"), **options)
    assert fake_agent.configure_calls == []
    assert not profiler_running()


def test_profiler_on_overrides_disabled_labels(fake_agent: FakeAgent) -> None:
    """profiler='on' profiles even when labelling is switched off."""
    assert start_profiler(tracer_provider=provider("svc"), enabled=False, profiler="on")


def test_missing_agent_returns_false(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without pyroscope-io (and no built-in sampler for this Python), 'auto' returns False with
    no error and 'on' logs one error naming the extra, on a Python pyroscope-io has a build for."""
    monkeypatch.setitem(sys.modules, "pyroscope", None)
    monkeypatch.setattr(_samplers.base, "PYTHON", (3, 12))
    monkeypatch.setattr(_samplers, "builtin_usable", lambda: (False, "no built-in sampler"))
    caplog.set_level(logging.ERROR, logger="span_profiles")
    assert not start_profiler(tracer_provider=provider("svc"))
    assert not caplog.records
    assert not start_profiler(tracer_provider=provider("svc"), profiler="on")
    assert not start_profiler(tracer_provider=provider("svc"), profiler="on")
    assert len(caplog.records) == 1
    assert "pip install" in caplog.records[0].getMessage()


def test_explicit_pyroscope_where_it_has_no_build_names_the_sampler_that_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """sampler='pyroscope' on a Python pyroscope-io has no build for (3.15): the warning about
    the labels and the one error say so and point to the built-in sampler, never to installing
    the extra, which installs nothing there."""
    monkeypatch.setitem(sys.modules, "pyroscope", None)
    monkeypatch.setattr(_samplers.base, "PYTHON", (3, 15))
    monkeypatch.setattr(_samplers.base, "FREE_THREADED", False)
    monkeypatch.setattr(_samplers.base, "builtin_usable", lambda: (True, "CPython 3.15"))
    caplog.set_level(logging.WARNING, logger="span_profiles")
    span_profiles.uninstrument()
    try:
        settings = span_profiles.Settings.resolve({"sampler": "pyroscope"}, environ={})
        span_profiles.instrument(tracer_provider=provider("svc"), settings=settings)
        assert not start_profiler(
            tracer_provider=provider("svc"), sampler="pyroscope", profiler="on"
        )
    finally:
        span_profiles.uninstrument()
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.ERROR], said
    for _, message in said:
        assert "pyroscope-io has no build for Python 3.15" in message, message
        assert "'builtin' takes the built-in sampler here" in message, message
        assert "pip install" not in message, message


@pytest.mark.parametrize("failure", ["raises", "refuses"])
def test_agent_failure_is_logged_once_and_returns_false(
    fake_agent: FakeAgent, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """configure() raising or returning False gives False and one logged error, never an exception."""
    if failure == "raises":
        fake_agent.error = RuntimeError("boom")
    else:
        fake_agent.result = False
    caplog.set_level(logging.ERROR, logger="span_profiles")
    assert not start_profiler(tracer_provider=provider("svc"))
    assert not start_profiler(tracer_provider=provider("svc"))
    assert not profiler_running()
    assert len(caplog.records) == 1


def test_gunicorn_post_fork_passes_worker_number(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gunicorn hooks start the profiler with the worker's age as CPU index and the options."""
    seen: list[dict[str, object]] = []

    def start(**kw: object) -> bool:
        seen.append(kw)
        return True

    monkeypatch.setattr("span_profiles.gunicorn.start_profiler", start)

    class Worker:
        age = 3

    post_fork(object(), Worker())
    make_post_fork(upload_interval=4)(object(), object())
    assert seen == [{"cpu_index": 3}, {"cpu_index": None, "upload_interval": 4}]
