"""What finding the route before the app runs costs, per request, for Flask, Django and FastAPI.

Run: ``python benchmarks/routing.py`` (``--quick`` for a short run). For each framework, an app
with ``--routes`` routes (default 10 and 100) is asked for its last route (the worst case: the
lookup, like the router, scans the routes in order) and its first one. Two numbers per row:

* lookup: one call of the up-front lookup alone (Flask's URL map match, Django's resolver,
  Starlette/FastAPI route matching), in µs;
* request: one whole in-process request through the instrumented app (no server, no network),
  with the lookup and without it, in µs, and the difference.

Each run's value is its fastest short batch of calls (waiting for a CPU on a shared machine only
ever adds time); configurations are interleaved and repeated, and the median over runs is printed
with every run's value. Read the differences against the spread of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

import span_profiles
from span_profiles.testing import RecordingSink


def _per_call(fn: Callable[[], object], seconds: float) -> float:
    """µs per call of ``fn``: the fastest batch of calls (about 0.2 ms each) within ``seconds``.

    The fastest batch, not the mean: on a shared machine most batches include time the process
    spent waiting for a CPU, which says nothing about the code. Batches are short so that some
    of them run without being preempted.
    """
    start = time.perf_counter()
    fn()
    batch = max(1, int(200e-6 / max(time.perf_counter() - start, 1e-7)))
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        end = time.perf_counter()
        best = min(best, (end - start) / batch)
        if end >= deadline:
            return best * 1e6


def _measure(
    configs: dict[str, Callable[[], object]], repeats: int, seconds: float
) -> dict[str, list[float]]:
    """Every configuration ``repeats`` times, interleaved (a, b, c, a, b, c, ...)."""
    runs: dict[str, list[float]] = {name: [] for name in configs}
    for fn in configs.values():
        fn()  # warm-up: caches, first-request start-up
    for _ in range(repeats):
        for name, fn in configs.items():
            runs[name].append(_per_call(fn, seconds))
    return runs


def _row(framework: str, routes: int, target: str, runs: dict[str, list[float]]) -> str:
    med = {name: statistics.median(values) for name, values in runs.items()}
    every = "; ".join(
        f"{name}: " + ", ".join(f"{v:.1f}" for v in values) for name, values in runs.items()
    )
    return (
        f"| {framework} | {routes} | {target} | {med['lookup']:.1f} | {med['request off']:.1f} | "
        f"{med['request on']:.1f} | {med['request on'] - med['request off']:+.1f} | {every} |"
    )


def _wsgi_environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _call_wsgi(app: Any, path: str) -> Callable[[], object]:
    def request() -> object:
        body = app(_wsgi_environ(path), lambda status, headers, exc_info=None: None)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return body

    return request


def flask_rows(provider: Any, routes: int, repeats: int, seconds: float) -> list[str]:
    """Flask: the URL map matched by the extension before Flask's own match."""
    import flask
    from span_profiles import flask as sp_flask

    def make(with_lookup: bool) -> Any:
        app = flask.Flask(f"bench{routes}{with_lookup}")
        for i in range(routes):
            app.add_url_rule(f"/r{i}/<int:x>", f"r{i}", lambda x: "ok")
        real = sp_flask._url_rule_finder
        if not with_lookup:
            sp_flask._url_rule_finder = lambda app: None  # type: ignore[assignment, return-value]
        try:
            sp_flask.SpanProfiles(app, tracer_provider=provider)
        finally:
            sp_flask._url_rule_finder = real
        return app

    on, off = make(True), make(False)
    find = sp_flask._url_rule_finder(on)
    rows = []
    for target, index in (("last", routes - 1), ("first", 0)):
        path = f"/r{index}/7"
        assert find(_wsgi_environ(path)) == f"/r{index}/<int:x>"
        runs = _measure(
            {
                "lookup": functools.partial(lambda p: find(_wsgi_environ(p)), path),
                "request off": _call_wsgi(off.wsgi_app, path),
                "request on": _call_wsgi(on.wsgi_app, path),
            },
            repeats,
            seconds,
        )
        rows.append(_row("Flask", routes, target, runs))
    return rows


def django_rows(provider: Any, routes: int, repeats: int, seconds: float) -> list[str]:
    """Django: the URL resolver asked by the middleware before the other middlewares run."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.urls import clear_url_caches, path, set_urlconf

    import django
    from span_profiles.django import middleware as sp_django

    urls = types.ModuleType(f"bench_urls_{routes}")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path(f"r{i}/<int:x>", lambda request, x: HttpResponse("ok")) for i in range(routes)
    ]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=urls.__name__,
            MIDDLEWARE=["span_profiles.django.SpanProfilesMiddleware"],
            INSTALLED_APPS=[],
        )
        django.setup()
    settings.ROOT_URLCONF = urls.__name__
    clear_url_caches()
    set_urlconf(None)
    span_profiles.uninstrument()
    span_profiles.instrument(tracer_provider=provider, sink=RecordingSink())
    on = WSGIHandler()
    real = sp_django._resolve_early
    sp_django._resolve_early = lambda request: None
    try:
        off = WSGIHandler()
    finally:
        sp_django._resolve_early = real
    from django.test import RequestFactory

    rows = []
    for target, index in (("last", routes - 1), ("first", 0)):
        request = RequestFactory().get(f"/r{index}/7")
        assert real(request) == f"r{index}/<int:x>"
        runs = _measure(
            {
                "lookup": functools.partial(real, request),
                "request off": _call_wsgi(off, f"/r{index}/7"),
                "request on": _call_wsgi(on, f"/r{index}/7"),
            },
            repeats,
            seconds,
        )
        rows.append(_row("Django", routes, target, runs))
    return rows


def fastapi_rows(provider: Any, routes: int, repeats: int, seconds: float) -> list[str]:
    """FastAPI: routes in an included router, matched against the scope by route_finder."""
    from fastapi import APIRouter, FastAPI
    from span_profiles.fastapi import SpanProfilesMiddleware, route_finder

    def make(with_lookup: bool) -> Any:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        api = APIRouter(prefix="/api")
        for i in range(routes):
            api.add_api_route(f"/r{i}/{{x}}", lambda x: "ok", methods=["GET"])
        app.include_router(api)
        app.add_middleware(
            SpanProfilesMiddleware,
            tracer_provider=provider,
            find_route=route_finder(app) if with_lookup else None,
        )
        return app

    on, off = make(True), make(False)
    find = route_finder(on)
    loop = asyncio.new_event_loop()

    def scope(path: str) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    def call(app: Any, path: str) -> Callable[[], object]:
        return lambda: loop.run_until_complete(app(scope(path), receive, send))

    rows = []
    for target, index in (("last", routes - 1), ("first", 0)):
        path = f"/api/r{index}/7"
        assert find(scope(path)) == f"/api/r{index}/{{x}}"
        runs = _measure(
            {
                "lookup": functools.partial(lambda p: find(scope(p)), path),
                "request off": call(off, path),
                "request on": call(on, path),
            },
            repeats,
            seconds,
        )
        rows.append(_row("FastAPI", routes, target, runs))
    loop.close()
    return rows


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of 0.1 s per cell")
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    repeats, seconds = (3, 0.1) if args.quick else (7, 0.3)
    provider = TracerProvider()
    span_profiles.instrument(tracer_provider=provider, sink=RecordingSink())
    print(f"Python {sys.version.split()[0]}; {repeats} interleaved runs of {seconds} s per cell")
    print(
        "| framework | routes | route | lookup µs | request µs, without | with | added µs | "
        "every run (µs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for routes in args.routes:
        for rows in (flask_rows, django_rows, fastapi_rows):
            for row in rows(provider, routes, repeats, seconds):
                print(row, flush=True)
    span_profiles.uninstrument()


if __name__ == "__main__":
    main()
