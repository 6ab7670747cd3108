"""Settings: one frozen dataclass, resolved once.

Precedence: explicit argument > framework settings (``SPAN_PROFILES = {...}`` in Django,
``app.config["SPAN_PROFILES_..."]`` in Flask) > environment > default. Nothing is read at import
time: :meth:`Settings.resolve` takes the environment as a parameter.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ENV", "Settings", "SettingsError"]


class SettingsError(ValueError):
    """An invalid setting; the message names the setting and where its value came from."""


Scope = Literal["root", "all"]

# Every environment variable we read, by setting name. The agent's own arguments use the
# PYROSCOPE_ prefix, like the agent's documentation; our own options use SPAN_PROFILES_.
ENV: dict[str, str] = {
    "enabled": "SPAN_PROFILES_ENABLED",
    "scope": "SPAN_PROFILES_SCOPE",
    "span_name": "SPAN_PROFILES_SPAN_NAME",
    "trace_id": "SPAN_PROFILES_TRACE_ID",
    "profiler": "SPAN_PROFILES_PROFILER",
    "pin_cpu": "SPAN_PROFILES_PIN_CPU",
    "application_name": "PYROSCOPE_APPLICATION_NAME",
    "server_address": "PYROSCOPE_SERVER_ADDRESS",
    "sample_rate": "PYROSCOPE_SAMPLE_RATE",
    "tags": "PYROSCOPE_TAGS",
    "basic_auth_username": "PYROSCOPE_BASIC_AUTH_USERNAME",
    "basic_auth_password": "PYROSCOPE_BASIC_AUTH_PASSWORD",
    "tenant_id": "PYROSCOPE_TENANT_ID",
    "http_headers": "PYROSCOPE_HTTP_HEADERS",
    "upload_interval": "PYROSCOPE_UPLOAD_INTERVAL",
    "enable_logging": "PYROSCOPE_ENABLE_LOGGING",
}

DEFAULT_SERVER_ADDRESS = "http://127.0.0.1:4040"
"""The local receiver started by ``span-profiles serve``."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _scope(value: Any) -> Scope:
    if value == "root":
        return "root"
    if value == "all":
        return "all"
    raise ValueError("expected 'root' or 'all'")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a positive integer")
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


def _mapping(value: Any) -> dict[str, str]:
    """A dict, or ``k=v,k2=v2`` text."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected k=v pairs separated by commas, got {part!r}")
            items.append((key.strip(), val.strip()))
    else:
        raise ValueError("expected a mapping or 'k=v,k2=v2'")
    return dict(items)


def _tags(value: Any) -> dict[str, str]:
    tags = _mapping(value)
    for key in tags:
        if not _LABEL_NAME.match(key):
            raise ValueError(f"tag name {key!r} is not a valid label name")
    return tags


def _url(value: Any) -> str:
    text = str(value).strip()
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _text(value: Any) -> str:
    return str(value)


def _optional_text(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _profiler(value: Any) -> Literal["auto", "on", "off"]:
    text = str(value).strip().lower()
    if text in ("auto", "on", "off"):
        return text  # type: ignore[return-value]
    if text in _TRUE:
        return "on"
    if text in _FALSE:
        return "off"
    raise ValueError("expected 'auto', 'on' or 'off'")


def _pin(value: Any) -> Literal["auto", "on", "off"]:
    return _profiler(value)


@dataclass(frozen=True)
class Settings:
    """Everything span-profiles can be told. Build it with :meth:`resolve`."""

    enabled: bool = True
    """Master switch: ``False`` makes every adapter a pass-through."""
    scope: Scope = "root"
    """``"root"``: label with the local root span (Grafana's convention); ``"all"``: every span."""
    span_name: bool = True
    """Add the ``span_name`` label (the root's name, a route template for web requests)."""
    trace_id: bool = False
    """Add the ``trace_id`` label. Off: older Pyroscope servers make it a series label."""
    profiler: Literal["auto", "on", "off"] = "auto"
    """Start the pyroscope-io agent: ``auto`` starts it when pyroscope-io is installed."""
    pin_cpu: Literal["auto", "on", "off"] = "auto"
    """Put the agent's threads and the event-loop thread on one CPU (Linux; see README)."""
    application_name: str | None = None
    """Pyroscope ``service_name``; default: the tracer provider's ``service.name``."""
    server_address: str = DEFAULT_SERVER_ADDRESS
    """Where the agent pushes profiles; default: the local receiver."""
    sample_rate: int = 100
    """Samples per second."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Static series labels added to every profile."""
    basic_auth_username: str = ""
    """HTTP basic auth user for the server."""
    basic_auth_password: str = dataclasses.field(default="", repr=False)
    """HTTP basic auth password for the server."""
    tenant_id: str = ""
    """Pyroscope tenant (``X-Scope-OrgID``)."""
    http_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Extra HTTP headers on every push."""
    upload_interval: int = 10
    """Seconds between pushes."""
    enable_logging: bool = False
    """Let the agent log (its Rust side is silent otherwise)."""

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any] | None = None,
        framework: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        framework_name: str = "framework settings",
    ) -> Settings:
        """Merge the sources (explicit > framework > environment > default) and validate.

        ``None`` values in ``explicit`` and ``framework`` mean "not given". ``environ`` defaults
        to ``os.environ``, read now. Raises :class:`SettingsError` naming the bad setting.
        """
        env = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for source_name, source in (("argument", explicit), (framework_name, framework)):
            for key in source or {}:
                if key not in names:
                    raise SettingsError(
                        f"unknown span-profiles setting {key!r} in {source_name}; "
                        f"known: {', '.join(sorted(names))}"
                    )
        for name in names:
            origin, raw = None, None
            if explicit and explicit.get(name) is not None:
                origin, raw = f"argument {name}", explicit[name]
            elif framework and framework.get(name) is not None:
                origin, raw = f"{framework_name} {name}", framework[name]
            elif ENV.get(name) in env:
                origin, raw = f"environment variable {ENV[name]}", env[ENV[name]]
            if origin is None:
                continue
            try:
                values[name] = _PARSERS[name](raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(
                    f"invalid span-profiles setting {origin}={raw!r}: {exc}"
                ) from None
        return cls(**values)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "scope": _scope,
    "span_name": _bool,
    "trace_id": _bool,
    "profiler": _profiler,
    "pin_cpu": _pin,
    "application_name": _optional_text,
    "server_address": _url,
    "sample_rate": _positive_int,
    "tags": _tags,
    "basic_auth_username": _text,
    "basic_auth_password": _text,
    "tenant_id": _text,
    "http_headers": _mapping,
    "upload_interval": _positive_int,
    "enable_logging": _bool,
}
