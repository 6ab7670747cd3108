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

from span_profiles._core.processor import Scope

__all__ = ["ENV", "SamplerSetting", "Settings", "SettingsError", "Toggle"]


class SettingsError(ValueError):
    """An invalid setting; the message names the setting and where its value came from."""


Toggle = Literal["auto", "on", "off"]
"""A three-way switch: ``auto`` decides from what is installed and where it runs."""

SamplerSetting = Literal["auto", "pyroscope", "builtin"]
"""Which sampler: ``auto`` takes pyroscope-io where it can run, the built-in one elsewhere."""

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


def _toggle(value: Any) -> Toggle:
    text = str(value).strip().lower()
    if text in ("auto", "on", "off"):
        return text  # type: ignore[return-value]
    if text in _TRUE:
        return "on"
    if text in _FALSE:
        return "off"
    raise ValueError("expected 'auto', 'on' or 'off'")


def _sampler(value: Any) -> SamplerSetting:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("pyroscope", "pyroscope-io"):
        return "pyroscope"
    if text in ("builtin", "built-in"):
        return "builtin"
    raise ValueError("expected 'auto', 'pyroscope' or 'builtin'")


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a positive number")
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError("expected a positive number")
    return number


def _setting(default: Any, parse: Callable[[Any], Any], env: str, **kwargs: Any) -> Any:
    """One setting: its default, its parser and its environment variable, declared together."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"parse": parse, "env": env}, **kwargs)
    return field(default=default, metadata={"parse": parse, "env": env}, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Everything span-profiles can be told. Build it with :meth:`resolve`."""

    enabled: bool = _setting(True, _bool, "SPAN_PROFILES_ENABLED")
    """Master switch: ``False`` makes every adapter a pass-through."""
    scope: Scope = _setting("root", _scope, "SPAN_PROFILES_SCOPE")
    """``"root"``: label with the local root span (Grafana's convention); ``"all"``: every span."""
    span_name: bool = _setting(True, _bool, "SPAN_PROFILES_SPAN_NAME")
    """Add the ``span_name`` label (the root's name, a route template for web requests)."""
    trace_id: bool = _setting(False, _bool, "SPAN_PROFILES_TRACE_ID")
    """Add the ``trace_id`` label. Off: Pyroscope servers older than mid-2026 make it a series label."""
    profiler: Toggle = _setting("auto", _toggle, "SPAN_PROFILES_PROFILER")
    """Start a sampler: ``auto`` starts one when one can run here (see ``sampler``)."""
    sampler: SamplerSetting = _setting("auto", _sampler, "SPAN_PROFILES_SAMPLER")
    """``pyroscope`` (pyroscope-io's agent), ``builtin`` (CPython 3.14+'s own stack reader in a
    child process) or ``auto``: pyroscope-io where it can run, else the built-in sampler."""
    builtin_pause: bool = _setting(True, _bool, "SPAN_PROFILES_BUILTIN_PAUSE")
    """Built-in sampler: stop an event-loop thread for the ~50-150 µs of each read (ptrace), so
    its running task and its frames are one snapshot; ``False`` reads it running and drops the
    reads that straddle a task switch (more of them at short task steps)."""
    wall: bool = _setting(False, _bool, "SPAN_PROFILES_WALL")
    """Also push a wall-clock profile (``__name__=wall``): where each request's time went, on
    CPU and waiting (docs/wall.md)."""
    pin_cpu: Toggle = _setting("auto", _toggle, "SPAN_PROFILES_PIN_CPU")
    """Put the agent's sampler and the event-loop thread on one CPU (Linux; see README)."""
    wait_for_sampler: bool = _setting(True, _bool, "SPAN_PROFILES_WAIT_FOR_SAMPLER")
    """Worker threads switch labels only while the agent's sampler is not reading (Linux)."""
    shutdown_timeout: float = _setting(3.0, _positive_float, "SPAN_PROFILES_SHUTDOWN_TIMEOUT")
    """Seconds the exit flush may take; what is still queued then is dropped (and logged)."""
    application_name: str | None = _setting(None, _optional_text, "PYROSCOPE_APPLICATION_NAME")
    """Pyroscope ``service_name``; default: the tracer provider's ``service.name``."""
    server_address: str = _setting(DEFAULT_SERVER_ADDRESS, _url, "PYROSCOPE_SERVER_ADDRESS")
    """Where the agent pushes profiles; default: the local receiver."""
    sample_rate: int = _setting(100, _positive_int, "PYROSCOPE_SAMPLE_RATE")
    """Samples per second."""
    tags: Mapping[str, str] = _setting({}, _tags, "PYROSCOPE_TAGS")
    """Static series labels added to every profile."""
    basic_auth_username: str = _setting("", _text, "PYROSCOPE_BASIC_AUTH_USERNAME")
    """HTTP basic auth user for the server."""
    basic_auth_password: str = _setting("", _text, "PYROSCOPE_BASIC_AUTH_PASSWORD", repr=False)
    """HTTP basic auth password for the server."""
    tenant_id: str = _setting("", _text, "PYROSCOPE_TENANT_ID")
    """Pyroscope tenant (``X-Scope-OrgID``)."""
    http_headers: Mapping[str, str] = _setting({}, _mapping, "PYROSCOPE_HTTP_HEADERS", repr=False)
    """Extra HTTP headers on every push."""
    upload_interval: int = _setting(10, _positive_int, "PYROSCOPE_UPLOAD_INTERVAL")
    """Seconds between pushes."""
    enable_logging: bool = _setting(False, _bool, "PYROSCOPE_ENABLE_LOGGING")
    """Let the agent log (its Rust side is silent otherwise)."""
    gil_only: bool = _setting(True, _bool, "PYROSCOPE_GIL_ONLY")
    """Sample only threads that hold the GIL; ``False`` also samples native code that released it
    (hashlib/scrypt, bcrypt, zlib, numpy), at a sampler cost that grows with the thread count."""
    oncpu: bool = _setting(True, _bool, "PYROSCOPE_ONCPU")
    """Sample only threads on a CPU, so idle waits are left out."""
    report_pid: bool = _setting(False, _bool, "PYROSCOPE_REPORT_PID")
    """Add the process id as a label."""
    report_thread_id: bool = _setting(False, _bool, "PYROSCOPE_REPORT_THREAD_ID")
    """Add the thread id as a label."""
    report_thread_name: bool = _setting(False, _bool, "PYROSCOPE_REPORT_THREAD_NAME")
    """Add the thread name as a label."""
    line_no: bool = _setting(True, _bool, "PYROSCOPE_LINE_NO")
    """Keep line numbers in frames (``False`` merges a function's lines into one frame)."""

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
            elif ENV[name] in env:
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

    def with_overrides(self, **given: Any) -> Settings:
        """These settings with ``given`` on top, parsed like arguments; ``None`` means "not given".

        The environment is not read again: it was read when these settings were resolved.
        """
        names = {f.name for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, raw in given.items():
            if name not in names:
                raise SettingsError(
                    f"unknown span-profiles setting {name!r} in argument; "
                    f"known: {', '.join(sorted(names))}"
                )
            if raw is None:
                continue
            try:
                values[name] = _PARSERS[name](raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(
                    f"invalid span-profiles setting argument {name}={raw!r}: {exc}"
                ) from None
        return dataclasses.replace(self, **values) if values else self


ENV: dict[str, str] = {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}
"""Every environment variable read, by setting name: the agent's own options use the
``PYROSCOPE_`` prefix, like the agent's documentation; ours use ``SPAN_PROFILES_``."""

_PARSERS: dict[str, Callable[[Any], Any]] = {
    f.name: f.metadata["parse"] for f in dataclasses.fields(Settings)
}
