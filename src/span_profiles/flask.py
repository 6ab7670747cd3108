"""Flask: a server span per request, named ``METHOD rule`` (e.g. ``GET /items/<int:item_id>``).

::

    from span_profiles.flask import SpanProfiles

    app = Flask(__name__)
    app.config["SPAN_PROFILES_APPLICATION_NAME"] = "shop"
    SpanProfiles(app)                      # or: ext = SpanProfiles(); ext.init_app(app)

Settings come from the arguments, then ``app.config["SPAN_PROFILES_<NAME>"]`` for every
:class:`span_profiles.Settings` field and every other adapter option (the same resolution as
keyword arguments), then the environment. ``app.wsgi_app`` is wrapped with
:class:`span_profiles.wsgi.SpanProfilesWSGIMiddleware`, so the span, and the labels, cover the
whole response including streamed bodies. The URL map is matched before Flask opens the session
or runs ``before_request`` hooks, so the span is born named after its rule and no sample of a
routed request carries a bare method; a ``before_request`` hook renames it should Flask's own
match differ. Works with threaded servers (werkzeug, gunicorn gthread).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from span_profiles._adapter import resolve_options
from span_profiles._core.sinks import Sink
from span_profiles._request import current_request
from span_profiles.wsgi import Environ, SpanProfilesWSGIMiddleware

try:
    from werkzeug.exceptions import HTTPException

    import flask
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "span_profiles.flask needs Flask. Install it with: pip install 'span-profiles[flask]'"
    ) from exc

__all__ = ["CONFIG_PREFIX", "SpanProfiles"]

CONFIG_PREFIX = "SPAN_PROFILES_"
"""``app.config`` keys with this prefix set :class:`span_profiles.Settings` fields."""

_EXTENSION = "span_profiles"


def config_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in a Flask config: ``SPAN_PROFILES_SCOPE`` -> ``scope`` and so on.

    Unknown ``SPAN_PROFILES_*`` keys are kept, so that resolving them names the typo.
    """
    return {
        key[len(CONFIG_PREFIX) :].lower(): value
        for key, value in config.items()
        if key.startswith(CONFIG_PREFIX)
    }


class SpanProfiles:
    """The Flask extension.

    Args:
        app: the app to instrument now; or call :meth:`init_app` later (app factories).
        tracer_provider: the provider to start spans with and to instrument; default: global.
        sink: where labels go; default: the pyroscope-io agent when installed.
        **options: :class:`span_profiles.Settings` fields and OTel's WSGI middleware options
            (``excluded_urls``, ``request_hook``, ``response_hook``, ``meter_provider``); they
            win over ``app.config``, where the same names take the ``SPAN_PROFILES_`` prefix
            (``SPAN_PROFILES_EXCLUDED_URLS``). ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` is read as
            OTel's Flask instrumentation reads it.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        tracer_provider: Any | None = None,
        sink: Sink | None = None,
        **options: Any,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._sink = sink
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Resolve the settings (raising :class:`span_profiles.SettingsError` if one is bad),
        wrap ``app.wsgi_app`` and register the renaming hook. A second call does nothing."""
        if _EXTENSION in app.extensions:
            return
        settings, options = resolve_options(
            self._options,
            config_settings(app.config),
            framework_name=f"Flask app.config[{CONFIG_PREFIX}<NAME>]",
        )
        app.extensions[_EXTENSION] = settings
        if not settings.enabled:
            return
        # SPAN_PROFILES_TRACER_PROVIDER is OTel's tracer_provider option; the argument wins.
        configured_provider = options.pop("tracer_provider", None)
        app.wsgi_app = SpanProfilesWSGIMiddleware(  # type: ignore[method-assign]
            app.wsgi_app,
            tracer_provider=self._tracer_provider or configured_provider,
            excluded_urls_env="FLASK",
            sink=self._sink,
            settings=settings,
            find_route=_url_rule_finder(app),
            **options,
        )
        # First in line, so that the app's own before_request hooks already carry the route.
        app.before_request_funcs.setdefault(None, []).insert(0, _rename_after_routing)


def _url_rule_finder(app: flask.Flask) -> Callable[[Environ], str | None]:
    def find(environ: Environ) -> str | None:
        # The match Flask makes when it pushes the request context (after opening the
        # session), made first. A shallow request that is not stored in the environ: Flask
        # builds its own, and the body stays unread.
        request = app.request_class(environ, populate_request=False, shallow=True)
        try:
            adapter = app.create_url_adapter(request)
            if adapter is None:
                return None
            rule, _ = adapter.match(return_rule=True)
        except HTTPException:
            # No rule (404), wrong method (405), a redirect, an untrusted host: Flask answers
            # these itself, and the span keeps the bare method, as it has no route.
            return None
        return rule.rule

    return find


def _rename_after_routing() -> None:
    request = current_request()
    rule = flask.request.url_rule
    if request is not None and rule is not None:
        request.rename(rule.rule)
