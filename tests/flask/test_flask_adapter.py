"""span_profiles.flask: the extension, its config keys, and labels in views and streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# A submodule: without Flask, "flask" would import this tests/flask directory.
pytest.importorskip("flask.app")
pytest.importorskip("opentelemetry.instrumentation.wsgi")

import flask
from span_profiles import SettingsError
from span_profiles.flask import SpanProfiles
from span_profiles.wsgi import SpanProfilesWSGIMiddleware
from tests.support.asgi import Probe, hex_id, only_span, span_names_applied

ITEM = "GET /items/<int:item_id>"


def make_app(probe: Probe, **config: Any) -> Any:
    """A Flask app probing labels in a before_request hook, views and a streamed body."""
    app = flask.Flask(__name__)
    app.config.update(config)

    @app.before_request
    def hook() -> None:
        probe("before_request")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        probe("view")
        return {"item_id": item_id}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(3):
                probe(f"chunk {i}")
                yield "x"

        return flask.Response(chunks())

    return app


def get(app: Any, path: str) -> Any:
    """GET ``path`` and close the response, as a server does when it has sent it."""
    response = app.test_client().get(path)
    response.close()
    return response


def test_view_and_hooks_carry_the_url_rule(instrumented: Any) -> None:
    """The span is named after the URL rule and the app's own hooks already see that name."""
    probe = Probe(instrumented.sink)
    app = make_app(probe)
    SpanProfiles(app, tracer_provider=instrumented.provider)
    response = get(app, "/items/5")
    assert response.json == {"item_id": 5}
    span = only_span(instrumented.exporter)
    assert span.name == ITEM
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/items/<int:item_id>"
    probe.assert_all(span, ITEM, count=2)


def test_streamed_body_is_labelled_until_closed(instrumented: Any) -> None:
    """Each chunk of a streamed response is produced under the request's labels."""
    probe = Probe(instrumented.sink)
    app = make_app(probe)
    SpanProfiles(app, tracer_provider=instrumented.provider)
    response = app.test_client().get("/stream", buffered=False)
    assert instrumented.exporter.get_finished_spans() == ()
    assert b"".join(response.response) == b"xxx"
    response.close()
    span = only_span(instrumented.exporter)
    probe.assert_all(span, "GET /stream", count=4)


def test_unmatched_url_is_named_by_method(instrumented: Any) -> None:
    """A 404 keeps the method-only name."""
    app = make_app(Probe(instrumented.sink))
    SpanProfiles(app, tracer_provider=instrumented.provider)
    assert get(app, "/nope/1").status_code == 404
    assert only_span(instrumented.exporter).name == "GET"


def test_init_app_is_idempotent_and_supports_factories(instrumented: Any) -> None:
    """init_app on an app factory's app wraps wsgi_app once, however often it is called."""
    extension = SpanProfiles(tracer_provider=instrumented.provider)
    app = make_app(Probe(instrumented.sink))
    extension.init_app(app)
    wrapped = app.wsgi_app
    extension.init_app(app)
    SpanProfiles(app)
    assert app.wsgi_app is wrapped
    assert isinstance(wrapped, SpanProfilesWSGIMiddleware)
    get(app, "/items/1")
    assert only_span(instrumented.exporter).name == ITEM


def test_config_keys_are_settings_and_arguments_win() -> None:
    """SPAN_PROFILES_<FIELD> config keys set fields; explicit arguments beat them."""
    app = make_app(Probe(None), SPAN_PROFILES_SCOPE="all", SPAN_PROFILES_APPLICATION_NAME="shop")  # type: ignore[arg-type]
    SpanProfiles(app)
    settings = app.extensions["span_profiles"]
    assert (settings.scope, settings.application_name) == ("all", "shop")
    app = make_app(Probe(None), SPAN_PROFILES_SCOPE="all")  # type: ignore[arg-type]
    SpanProfiles(app, scope="root")
    assert app.extensions["span_profiles"].scope == "root"


def test_config_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config key wins over the environment variable for the same setting."""
    monkeypatch.setenv("PYROSCOPE_SAMPLE_RATE", "7")
    app = make_app(Probe(None), SPAN_PROFILES_SAMPLE_RATE=50)  # type: ignore[arg-type]
    SpanProfiles(app)
    assert app.extensions["span_profiles"].sample_rate == 50
    app = make_app(Probe(None))  # type: ignore[arg-type]
    SpanProfiles(app)
    assert app.extensions["span_profiles"].sample_rate == 7


@pytest.mark.parametrize(
    ("config", "named"),
    [({"SPAN_PROFILES_SCOPE": "bogus"}, "scope"), ({"SPAN_PROFILES_COLOUR": "red"}, "colour")],
)
def test_bad_config_fails_init_app(config: dict[str, Any], named: str) -> None:
    """An invalid or unknown SPAN_PROFILES_* key raises SettingsError naming it at init_app."""
    with pytest.raises(SettingsError, match=named):
        SpanProfiles(make_app(Probe(None), **config))  # type: ignore[arg-type]


def test_disabled_leaves_the_app_alone(instrumented: Any) -> None:
    """SPAN_PROFILES_ENABLED=False leaves wsgi_app unwrapped: no spans."""
    app = make_app(Probe(instrumented.sink), SPAN_PROFILES_ENABLED=False)
    original = app.wsgi_app
    SpanProfiles(app, tracer_provider=instrumented.provider)
    assert app.wsgi_app == original
    get(app, "/items/1")
    assert instrumented.exporter.get_finished_spans() == ()


def test_session_opening_and_earlier_hooks_already_carry_the_rule(instrumented: Any) -> None:
    """The URL map is matched before Flask opens the session and runs before_request hooks.

    A hook registered before SpanProfiles, and the session interface, both run before Flask's
    own match; their labels carry the rule, and the span never shows a bare method.
    """
    probe = Probe(instrumented.sink)
    app = flask.Flask(__name__)
    app.secret_key = "tests"

    class ProbingSessions(flask.sessions.SecureCookieSessionInterface):
        def open_session(self, app: flask.Flask, request: flask.Request) -> Any:
            probe("open_session")
            return super().open_session(app, request)

    app.session_interface = ProbingSessions()

    @app.before_request
    def early_hook() -> None:
        probe("before_request")

    @app.post("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    SpanProfiles(app, tracer_provider=instrumented.provider)
    response = app.test_client().post("/items/4", data=b"x" * 10)
    response.close()
    assert response.json == {"item_id": 4}
    span = only_span(instrumented.exporter)
    assert span.name == "POST /items/<int:item_id>"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/items/<int:item_id>"
    probe.assert_all(span, "POST /items/<int:item_id>", count=2)
    assert span_names_applied(instrumented.sink, hex_id(span)) == {"POST /items/<int:item_id>"}


def test_unrouted_requests_keep_the_method_name(instrumented: Any) -> None:
    """A 404, a 405 and a slash redirect have no rule: the span is the bare method, as before."""
    app = flask.Flask(__name__)

    @app.get("/dir/")
    def directory() -> str:
        return "d"

    SpanProfiles(app, tracer_provider=instrumented.provider)
    client = app.test_client()
    statuses = []
    for method, path in (("GET", "/nowhere"), ("DELETE", "/dir/"), ("GET", "/dir")):
        response = client.open(path, method=method)
        response.close()
        statuses.append(response.status_code)
    assert statuses == [404, 405, 308]
    assert [s.name for s in instrumented.exporter.get_finished_spans()] == ["GET", "DELETE", "GET"]


def test_app_config_reaches_adapter_options(
    instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.config["SPAN_PROFILES_*"] goes through the resolution explicit options use."""
    from span_profiles import _adapter

    monkeypatch.setitem(_adapter.ADAPTER_OPTIONS, "excluded_urls", split_urls)
    app = flask.Flask(__name__)
    app.config["SPAN_PROFILES_EXCLUDED_URLS"] = "health,metrics"
    SpanProfiles(app, tracer_provider=instrumented.provider)
    middleware = app.wsgi_app
    assert isinstance(middleware, SpanProfilesWSGIMiddleware)
    assert middleware._core.options == {"excluded_urls": ["health", "metrics"]}
    explicit = flask.Flask(__name__)
    explicit.config["SPAN_PROFILES_EXCLUDED_URLS"] = "health"
    SpanProfiles(explicit, tracer_provider=instrumented.provider, excluded_urls="admin")
    assert explicit.wsgi_app._core.options == {"excluded_urls": ["admin"]}  # type: ignore[attr-defined]


def split_urls(value: Any) -> list[str]:
    """An adapter option parser; like every parser, it accepts its own output unchanged."""
    return list(value) if isinstance(value, list) else str(value).split(",")
