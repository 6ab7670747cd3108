"""What every web adapter is built from: its resolved options, its lazy start, one request's span.

An adapter (ASGI, WSGI, Django; a Litestar or Quart one next) holds one :class:`AdapterCore`,
made once in its constructor, and per request calls :meth:`AdapterCore.begin` with what only it
knows (the method, the carrier and getter, OTel's attribute collector, the route if it can tell
early). Everything framework-free and repeated between adapters lives here or in
:mod:`span_profiles._request`.

Options: explicit keyword arguments and a framework's own settings (Django's ``SPAN_PROFILES``,
Flask's ``app.config["SPAN_PROFILES_*"]``) go through the same :func:`resolve_options`. Names
that are :class:`~span_profiles.Settings` fields become settings; names listed in
:data:`ADAPTER_OPTIONS` (OpenTelemetry's middleware options) become :attr:`AdapterCore.options`;
any other name is an error naming it.

OTel's features (metrics, header capture, excluded URLs, hooks, suppression) are built once into
:attr:`AdapterCore.http` and run per request by :meth:`AdapterCore.begin` and the
:class:`~span_profiles._request.RequestSpan` it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from span_profiles import _otel_compat, _otel_http
from span_profiles._core import guard
from span_profiles._request import RequestSpan, start, tracer_for
from span_profiles._settings import Settings, SettingsError
from span_profiles._startup import LazyStart

__all__ = [
    "ADAPTER_OPTIONS",
    "AdapterCore",
    "EarlyRoute",
    "collect_attributes",
    "inject_response_headers",
    "resolve_options",
]

ADAPTER_OPTIONS: dict[str, Callable[[Any], Any]] = dict(_otel_http.OPTION_PARSERS)
"""Options the adapters take besides :class:`~span_profiles.Settings` fields, by name, with the
parser that validates a given value (raising ``TypeError``/``ValueError``). A parser is called
only for a value that was given (not ``None``), and must accept its own output unchanged, as the
settings' parsers do: thin adapters (Flask, FastAPI) resolve the options, naming the source of a
bad value, and hand the result on to the middleware. Today: every keyword argument of OTel's ASGI
and WSGI middleware (:data:`span_profiles._otel_http.OPTION_PARSERS`)."""

_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def resolve_options(
    explicit: Mapping[str, Any],
    framework: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    framework_name: str = "framework settings",
) -> tuple[Settings, dict[str, Any]]:
    """Resolve an adapter's settings and its other options: explicit > framework > environment.

    ``settings`` (already resolved by a thin adapter) takes the place of the framework settings
    and of the environment, which it already includes. Raises
    :class:`~span_profiles.SettingsError` naming a bad or unknown option and where it came from.
    """
    explicit_settings, explicit_options = _split(explicit)
    framework_settings, framework_options = _split(framework or {})
    if settings is not None:
        resolved = settings.with_overrides(**explicit_settings)
    else:
        resolved = Settings.resolve(
            explicit_settings, framework_settings, framework_name=framework_name
        )
    options: dict[str, Any] = {}
    for name, parse in ADAPTER_OPTIONS.items():
        for origin, source in (("argument", explicit_options), (framework_name, framework_options)):
            raw = source.get(name)
            if raw is None:
                continue
            try:
                options[name] = parse(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(
                    f"invalid span-profiles option {origin} {name}={raw!r}: {exc}"
                ) from None
            break
    return resolved, options


def _split(given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # Unknown names go with the settings, whose resolution names them in its error.
    settings = {k: v for k, v in given.items() if k in _SETTING_NAMES or k not in ADAPTER_OPTIONS}
    return settings, {k: v for k, v in given.items() if k not in settings}


@dataclass(frozen=True)
class AdapterCore:
    """One adapter instance's fixed part, built once by :meth:`create`; nothing in it changes."""

    tracer_name: str
    """The instrumentation scope name of the spans (the adapter's module)."""
    settings: Settings
    options: Mapping[str, Any]
    """The resolved :data:`ADAPTER_OPTIONS` that were given."""
    tracer_provider: Any | None
    """The provider to start spans with; ``None``: the one ``instrument()`` used, else global."""
    ensure_started: LazyStart
    semconv: Any
    """OTel's HTTP semantic-convention opt-in mode, for its attribute collectors."""
    find_route: EarlyRoute
    """The framework's route lookup before the app runs (finds nothing if none was given)."""
    http: Any = None
    """OTel's HTTP server features for this adapter (:class:`span_profiles._otel_http.AsgiFeatures`
    or :class:`~span_profiles._otel_http.WsgiFeatures`); ``None`` when disabled."""

    @classmethod
    def create(
        cls,
        tracer_name: str,
        *,
        tracer_provider: Any | None = None,
        sink: Any | None = None,
        settings: Settings | None = None,
        options: Mapping[str, Any] | None = None,
        framework: Mapping[str, Any] | None = None,
        framework_name: str = "framework settings",
        find_route: Callable[[Any], str | None] | None = None,
        protocol: str | None = None,
        inner_otel: Any | None = None,
        excluded_urls_env: str | None = None,
    ) -> AdapterCore:
        """Resolve the options (see :func:`resolve_options`) and prepare the lazy start.

        Nothing starts here: servers may build the app before they fork. ``find_route`` is
        the framework's route lookup (see :class:`EarlyRoute`). ``protocol`` (``"asgi"`` or
        ``"wsgi"``) builds OTel's features from the options: ``inner_otel`` is an OTel
        middleware the adapter wraps directly (whose options it then takes),
        ``excluded_urls_env`` the ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` variable to read
        (default: the protocol's).
        """
        resolved, extra = resolve_options(
            options or {}, framework, settings=settings, framework_name=framework_name
        )
        # A tracer provider in the framework's settings (Django's SPAN_PROFILES) counts too.
        tracer_provider = tracer_provider or extra.get("tracer_provider")
        http: Any = None
        if protocol is not None and resolved.enabled:
            features = _otel_http.AsgiFeatures if protocol == "asgi" else _otel_http.WsgiFeatures
            http = features(
                extra,
                tracer_provider=tracer_provider,
                inner=inner_otel,
                env_name=excluded_urls_env or protocol.upper(),
            )
        return cls(
            tracer_name=tracer_name,
            settings=resolved,
            options=extra,
            tracer_provider=tracer_provider,
            ensure_started=LazyStart(tracer_provider, sink, resolved),
            semconv=_otel_compat.http_semconv_mode(),
            find_route=EarlyRoute(find_route),
            http=http,
        )

    @property
    def enabled(self) -> bool:
        """Whether the adapter does anything (``enabled`` setting); else it passes through."""
        return self.settings.enabled

    def begin(
        self,
        *,
        method: str,
        carrier: Any,
        getter: Any,
        collect: Callable[..., dict[str, Any]],
        raw_name: str | None = None,
        route: str | None = None,
        on_loop: bool = False,
        environ: Any | None = None,
        url: Callable[[], str] | None = None,
    ) -> RequestSpan | None:
        """Start (or adopt) the request's span; ``None``: pass the request through untraced.

        ``None`` when an outer adapter handles the request, when HTTP instrumentation is
        suppressed, or when its URL is excluded. A span this adapter starts gets OTel's
        features (``RequestSpan.exchange``: header capture, the hooks, the metrics).

        Args:
            method: the span name's method (:func:`span_profiles._request.http_method`).
            carrier: what the getter reads headers from (the ASGI scope, the WSGI environ).
            getter: OTel's getter for ``carrier``.
            collect: OTel's ``collect_request_attributes`` for ``carrier``.
            raw_name: the name an outer OTel middleware gives from the raw path.
            route: the route template, when the adapter could find it before the app runs.
            on_loop: the caller runs on an event loop's thread (see :class:`LazyStart`).
            environ: what the WSGI features read headers from and hand the hooks, if not
                ``carrier`` (Django: ``request.META``).
            url: the full URL, for excluded URLs, when the features cannot build it.
        """
        self.ensure_started(on_loop=on_loop)
        http = self.http
        environ = carrier if environ is None else environ
        if http is not None and http.skips(environ, url):
            return None
        name, extra = (None, {}) if http is None else http.details(carrier)
        attributes = collect_attributes(collect, carrier, self.semconv)
        attributes.update(extra)
        tracer = None if http is None else http.tracer
        request = start(
            tracer or tracer_for(self.tracer_name, self.tracer_provider),
            method=method,
            carrier=carrier,
            getter=getter,
            attributes=attributes,
            raw_name=raw_name,
            route=route,
            name=name,
        )
        if request is None:
            return None
        request.threaded = not on_loop
        if not request.owned:
            # The outer instrumentation owns the span: it records the status, the exception
            # and the metrics, and sends traceresponse.
            request.set_attributes(attributes)
        elif http is not None:
            try:
                request.exchange = http.begin(request.span, environ, attributes)
            except BaseException as exc:
                # A request hook that raises fails the request, as with OTel's WSGI middleware;
                # the span still ends, with the exception on it.
                request.record_exception(exc)
                request.end()
                raise
        return request


class EarlyRoute:
    """A framework's route lookup, run before the application so the span is born with its name.

    The lookup gets what the adapter passes (the scope, the environ, the request) and returns
    the route template, or ``None`` when nothing matches. It must not change the request. A
    lookup that raises is logged once and not called again: the span is then named when the
    framework routes, as without a lookup.
    """

    __slots__ = ("_find",)

    def __init__(self, find: Callable[[Any], str | None] | None) -> None:
        self._find = find

    def __call__(self, request: Any) -> str | None:
        """The route template for ``request``, or ``None``."""
        find = self._find
        if find is None:
            return None
        try:
            route = find(request)
        except Exception as exc:
            self._find = None
            guard.fail("finding the route before the application runs", exc)
            return None
        return route if isinstance(route, str) and route else None


def collect_attributes(
    collect: Callable[..., dict[str, Any]], carrier: Any, semconv: Any
) -> dict[str, Any]:
    """Run one of OTel's ``collect_request_attributes``; ``{}`` if it chokes on the request.

    They assume what real servers send (an int port, ``wsgi.url_scheme``...); test clients and
    odd servers do not always, and a request must never fail because of its attributes.
    """
    try:
        return collect(carrier, semconv)
    except Exception as exc:
        guard.fail("collecting request attributes", exc)
        return {}


def inject_response_headers(request: RequestSpan, carrier: Any, setter: Any) -> None:
    """Add the global response propagator's headers (``traceresponse``...), if one is set."""
    _otel_http.inject_response(carrier, request.span, setter)
