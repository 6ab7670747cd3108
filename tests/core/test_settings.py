"""Settings: precedence, parsing, and errors that name the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from span_profiles import Settings, SettingsError
from span_profiles._settings import ENV


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


def test_every_setting_is_in_a_documentation_table() -> None:
    """Each field, with its environment variable, has a row in a settings table of README.md or
    of a page under docs/."""
    root = Path(__file__).resolve().parents[2]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    rows = [
        line for page in pages for line in page.read_text().splitlines() if line.startswith("| `")
    ]
    for field in dataclasses.fields(Settings):
        row = next((r for r in rows if f"`{field.name}`" in r.split("|")[1]), None)
        assert row is not None, f"no documentation has a settings row for {field.name}"
        assert f"`{ENV[field.name]}`" in row, f"the row for {field.name} lacks {ENV[field.name]}"


def test_with_overrides_parses_like_arguments_and_keeps_the_rest() -> None:
    """``with_overrides`` validates the overrides and leaves every other value as resolved."""
    base = Settings.resolve(environ={"PYROSCOPE_SAMPLE_RATE": "250"})
    changed = base.with_overrides(trace_id="true", scope=None)
    assert changed.trace_id is True
    assert changed.sample_rate == 250
    assert changed.scope == base.scope
    assert base.with_overrides() is base
    with pytest.raises(SettingsError, match="argument sample_rate"):
        base.with_overrides(sample_rate="fast")
    with pytest.raises(SettingsError, match="unknown span-profiles setting 'nope'"):
        base.with_overrides(nope=1)


def test_shutdown_timeout_must_be_positive() -> None:
    """A zero, negative or infinite exit flush bound is refused with the setting's name."""
    for bad in ("0", "-1", "inf", "soon"):
        with pytest.raises(SettingsError, match="SPAN_PROFILES_SHUTDOWN_TIMEOUT"):
            Settings.resolve(environ={"SPAN_PROFILES_SHUTDOWN_TIMEOUT": bad})
    assert (
        Settings.resolve(environ={"SPAN_PROFILES_SHUTDOWN_TIMEOUT": "0.5"}).shutdown_timeout == 0.5
    )
