"""Settings: precedence, parsing, and errors that name the setting."""

from __future__ import annotations

import pytest

from span_profiles import Settings, SettingsError


def test_precedence_explicit_framework_environment_default() -> None:
    """An explicit argument beats framework settings, which beat the environment."""
    env = {"SPAN_PROFILES_SCOPE": "all", "PYROSCOPE_SAMPLE_RATE": "250", "PYROSCOPE_TAGS": "a=1"}
    s = Settings.resolve({"sample_rate": 50}, {"sample_rate": 75, "tags": {"b": "2"}}, env)
    assert s.sample_rate == 50
    assert s.tags == {"b": "2"}
    assert s.scope == "all"
    assert s.trace_id is False
    assert Settings.resolve({}, {}, {}).server_address == "http://127.0.0.1:4040"


def test_environment_values_are_parsed() -> None:
    """Booleans, integers and k=v lists from the environment become typed values."""
    env = {
        "SPAN_PROFILES_TRACE_ID": "yes",
        "SPAN_PROFILES_SPAN_NAME": "0",
        "PYROSCOPE_UPLOAD_INTERVAL": "5",
        "PYROSCOPE_HTTP_HEADERS": "X-A=1, X-B=two",
        "PYROSCOPE_SERVER_ADDRESS": "https://profiles.example:4040/",
    }
    s = Settings.resolve(environ=env)
    assert (s.trace_id, s.span_name, s.upload_interval) == (True, False, 5)
    assert s.http_headers == {"X-A": "1", "X-B": "two"}
    assert s.server_address == "https://profiles.example:4040"


@pytest.mark.parametrize(
    ("source", "value", "named"),
    [
        ("env", {"SPAN_PROFILES_SCOPE": "everything"}, "SPAN_PROFILES_SCOPE"),
        ("env", {"PYROSCOPE_SAMPLE_RATE": "-3"}, "PYROSCOPE_SAMPLE_RATE"),
        ("env", {"PYROSCOPE_SAMPLE_RATE": "fast"}, "PYROSCOPE_SAMPLE_RATE"),
        ("env", {"SPAN_PROFILES_TRACE_ID": "maybe"}, "SPAN_PROFILES_TRACE_ID"),
        ("env", {"PYROSCOPE_TAGS": "novalue"}, "PYROSCOPE_TAGS"),
        ("env", {"PYROSCOPE_TAGS": "bad-name=1"}, "PYROSCOPE_TAGS"),
        ("env", {"PYROSCOPE_SERVER_ADDRESS": "localhost:4040"}, "PYROSCOPE_SERVER_ADDRESS"),
        ("explicit", {"upload_interval": 0}, "upload_interval"),
        ("framework", {"scope": 3}, "scope"),
    ],
)
def test_bad_values_raise_an_error_naming_the_setting(
    source: str, value: dict[str, object], named: str
) -> None:
    """Every invalid value raises SettingsError with the setting's name and the bad value."""
    kwargs: dict[str, object] = {"environ": {}}
    if source == "env":
        kwargs["environ"] = value
    else:
        kwargs[source if source == "explicit" else "framework"] = value
    with pytest.raises(SettingsError, match=named):
        Settings.resolve(**kwargs)  # type: ignore[arg-type]


def test_unknown_setting_is_rejected() -> None:
    """A misspelt setting is an error listing the known ones, not silently ignored."""
    with pytest.raises(SettingsError, match="spanname"):
        Settings.resolve({"spanname": True}, environ={})


def test_settings_are_frozen() -> None:
    """Resolved settings cannot be changed afterwards."""
    s = Settings.resolve(environ={})
    with pytest.raises(AttributeError):
        s.scope = "all"  # type: ignore[misc]
