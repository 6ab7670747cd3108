"""Span profiles of a real app: FastAPI + SQLAlchemy async + asyncpg on a real PostgreSQL.

Run: ``python benchmarks/realapp.py`` (8 configurations x ``--repeats`` runs of ``--seconds``
each, plus start-up: about 4 minutes per repeat; ``--quick``: 8 s runs, one repeat). Needs
Debian's ``postgresql`` package (``scripts/install-postgres.sh``): a private cluster is started on
loopback in a temporary directory and removed afterwards. Prints the tables and every run, and
writes ``benchmarks/results/realapp.md`` and ``.json`` (``realapp-TAG.*`` with ``--tag TAG``,
``-quick`` with ``--quick``). ``SPAN_PROFILES_SAMPLER=builtin`` (CPython 3.14+) measures the
built-in sampler; with ``--no-baseline`` where pyroscope-io has no build (3.15).

The app is ``tests/support/apps/realapp.py`` (endpoints: health, live, list/get/create/update items
through an ``AsyncSession`` from a ``yield`` dependency, and ``many_rows``, an export of 5,000
rows); the harness is ``tests/support/realapp.py``. uvicorn serves it on uvloop and on ``--loop asyncio``
with the real pyroscope-io agent pushing to the local receiver; ``--clients`` keep-alive clients
send the endpoint mix for ``--seconds``.

Configurations, interleaved (each repeat runs them all, alternating the order):

- ``<loop>/agent``: the baseline, the agent alone (no span-profiles, no tracing): each
  endpoint's true CPU by stack, per request;
- ``<loop>/spans``: ``instrument_app(app)``, FastAPI's built-in telemetry off;
- ``<loop>/spans+telemetry``: FastAPI's telemetry on (a ``TracerProvider`` given), no
  ``operation_spans``; span-profiles adopts FastAPI's span;
- ``<loop>/spans+telemetry+operations``: the same with ``operation_spans`` (FastAPI's default).

Every sample is judged by its stack (``tests/support/realapp.py``): an endpoint's own work (handler,
helpers, route, session and its greenlet/close task, and its row decoder, which asyncpg runs in
``data_received`` outside any task) against the ``span_id`` it carries. Per endpoint: **held**
(share of its own CPU labelled with one of its spans), **foreign** (share of its profile that is
another endpoint's work), **unlabelled**; per run: bare-method ``span_name`` samples and the
driver callbacks' share of all CPU, split right / foreign / none. Goals (issue 15): no profile of
>= 30 samples more than 1 % foreign; many_rows holds >= 95 % of its CPU; every endpoint >= 90 %;
0 bare-method samples. ``SPAN_PROFILES_*`` variables of this process reach the app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from span_profiles.receiver import start_receiver_in_thread  # noqa: E402
from tests.support import realapp as harness  # noqa: E402
from tests.support.apps import realapp as app  # noqa: E402
from tests.support.postgres import private_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LOOPS = ("uvloop", "asyncio")
TELEMETRY = ("off", "on", "operations")


def configs(loops: tuple[str, ...], telemetry: bool) -> list[harness.Config]:
    """The baseline and the span-profiles configurations of each loop."""
    result = []
    for loop in loops:
        result.append(harness.Config(loop, "agent"))
        for mode in TELEMETRY if telemetry else ("off",):
            result.append(harness.Config(loop, "spans", mode))
    return result


def pct(value: float) -> str:
    """A fraction as a percentage."""
    return f"{100 * value:.1f} %"


def median_of(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> float:
    """The median of ``get(run)`` over runs."""
    return statistics.median(get(run) for run in runs)


def cell(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float], fmt: str) -> str:
    """``median (run, run, ...)`` formatted with ``fmt`` (``pct`` or a format spec)."""
    values = [get(run) for run in runs]
    show: Callable[[float], str] = pct if fmt == "pct" else (lambda v: format(v, fmt))
    median = statistics.median(values)
    if len(values) == 1:
        return show(median)
    return f"{show(median)} ({', '.join(show(v) for v in values)})"


Getter = Callable[[dict[str, Any]], float]
"""Reads one number from a run's JSON row."""


def endpoint_field(name: str, *fields: str) -> Getter:
    """The sum of ``fields`` of endpoint ``name``'s judgement."""
    return lambda row: float(sum(row["judgement"]["endpoints"][name][f] for f in fields))


def driver_ms(name: str) -> Getter:
    """Milliseconds per request of endpoint ``name`` in its row decoder, run by the loop."""

    def get(row: dict[str, Any]) -> float:
        stats = row["judgement"]["endpoints"][name]
        return harness.SAMPLE_MS * stats["own_driver"] / max(stats["requests"], 1)

    return get


def kind_share(kind: str, table: str = "kinds") -> Getter:
    """Share of all samples of stack ``kind`` (``table``: ``kinds`` or ``labelled_kinds``)."""
    return lambda row: row["judgement"][table].get(kind, 0) / max(row["judgement"]["total"], 1)


def driver_split(part: str) -> Getter:
    """Share of the driver-callback samples that are ``right``, ``foreign`` or ``none``."""
    return lambda row: (
        row["judgement"]["driver"].get(part, 0) / max(sum(row["judgement"]["driver"].values()), 1)
    )


def field(*path: str) -> Getter:
    """A number at ``path`` in the row."""

    def get(row: dict[str, Any]) -> float:
        value: Any = row
        for key in path:
            value = value[key]
        return float(value)

    return get


KINDS = ("task", "driver", "framework", "server", "loop", "driver-other", "span-profiles", "other")


def render(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in runs:
        by_key.setdefault(row["key"], []).append(row)
    lines = [
        "# Real app: FastAPI + SQLAlchemy async + asyncpg on PostgreSQL",
        "",
        f"`{meta['command']}` — {meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs "
        f"(load average {meta['load_before']} before, {meta['load_after']} after); "
        + ", ".join(f"{name} {value}" for name, value in meta["versions"].items())
        + f"; PostgreSQL {meta['postgres']}; {meta['clients']} clients for {meta['seconds']} s "
        f"per run, {meta['repeats']} repeat(s), agent at 100 Hz. Median over repeats, every run "
        "in parentheses.",
        "",
        "## Goals (span-profiles runs)",
        "",
        "| configuration | goal | runs met | value (runs) |",
        "|---|---|---:|---|",
    ]
    for key, rows in by_key.items():
        if rows[0]["config"]["mode"] != "spans":
            continue
        names: dict[str, list[tuple[bool, str]]] = {}
        for row in rows:
            for check in row["goals"]:
                names.setdefault(check["name"], []).append((check["ok"], check["detail"]))
        for name, results in names.items():
            met = sum(ok for ok, _ in results)
            details = "; ".join(detail for _, detail in results)
            lines.append(f"| {key} | {name} | {met}/{len(results)} | {details} |")
    lines.append("")
    for key, rows in by_key.items():
        lines += [f"## {key}", ""]
        if rows[0]["config"]["mode"] == "spans":
            lines += _spans_tables(rows)
        else:
            lines += _baseline_table(rows)
    return "\n".join(lines)


def _baseline_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| endpoint | requests | own samples | of which driver callbacks | own ms/request "
        "| driver ms/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in app.ENDPOINTS:
        lines.append(
            f"| {name} | {cell(rows, endpoint_field(name, 'requests'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'own'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'own_driver'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'ms_per_request'), '.2f')} "
            f"| {cell(rows, driver_ms(name), '.2f')} |"
        )
    return [*lines, "", _whole_run(rows), ""]


def _spans_tables(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| endpoint | requests | own samples | held | foreign (profile samples) | unlabelled "
        "| wrong/multi | own ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in app.ENDPOINTS:
        lines.append(
            f"| {name} | {cell(rows, endpoint_field(name, 'requests'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'own'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'held_share'), 'pct')} "
            f"| {cell(rows, endpoint_field(name, 'foreign_share'), 'pct')} "
            f"({cell(rows, endpoint_field(name, 'profile'), '.0f')}) "
            f"| {cell(rows, endpoint_field(name, 'unlabelled_share'), 'pct')} "
            f"| {cell(rows, endpoint_field(name, 'wrong', 'multi'), '.0f')} "
            f"| {cell(rows, endpoint_field(name, 'ms_per_request'), '.2f')} |"
        )
    labelled = ", ".join(
        f"{kind} {cell(rows, kind_share(kind, 'labelled_kinds'), 'pct')} of all"
        for kind in ("framework", "server", "loop")
    )
    return [
        *lines,
        "",
        _whole_run(rows),
        "",
        f"Driver callbacks (row decoders run by the loop): "
        f"{cell(rows, field('judgement', 'driver_share'), 'pct')} of all samples; of them right "
        f"{cell(rows, driver_split('right'), 'pct')}, foreign "
        f"{cell(rows, driver_split('foreign'), 'pct')}, none "
        f"{cell(rows, driver_split('none'), 'pct')}. Bare-method samples: "
        f"{cell(rows, field('judgement', 'bare'), '.0f')} "
        f"(by stack: {[row['judgement']['bare_kinds'] for row in rows]}). Samples carrying a "
        f"span whose stack is no endpoint's: {labelled}.",
        "",
    ]


def _whole_run(rows: list[dict[str, Any]]) -> str:
    shares = ", ".join(f"{kind} {cell(rows, kind_share(kind), 'pct')}" for kind in KINDS)
    return (
        f"Whole run: {cell(rows, field('rate'), '.1f')} requests/s, "
        f"{cell(rows, field('judgement', 'total'), '.0f')} samples, errors "
        f"{[row['errors'] for row in rows]}, {rows[0]['placement']}. Share of all samples by "
        f"stack: {shares}."
    )


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="8 s runs, one repeat")
    parser.add_argument("--seconds", type=float, help="load per run (default 20)")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients (12)")
    parser.add_argument("--repeats", type=int, help="runs per configuration (default 3)")
    parser.add_argument("--loop", choices=LOOPS, action="append", help="only these loops")
    parser.add_argument(
        "--no-telemetry", action="store_true", help="leave out FastAPI's built-in telemetry"
    )
    parser.add_argument("--no-baseline", action="store_true", help="leave out the agent alone")
    parser.add_argument(
        "--tag", help="write results/realapp-TAG.* (e.g. the sampler and Python) instead"
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    repeats = args.repeats or (1 if args.quick else 3)
    telemetry = not args.no_telemetry and harness.fastapi_has_telemetry()
    chosen = configs(tuple(args.loop or LOOPS), telemetry)
    if args.no_baseline:
        chosen = [c for c in chosen if c.mode != "agent"]

    if not args.no_baseline or os.environ.get("SPAN_PROFILES_SAMPLER") != "builtin":
        import pyroscope  # noqa: F401  (fail early without the agent)

    meta: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/realapp.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "versions": {
            name: _version(name)
            for name in ("fastapi", "sqlalchemy", "asyncpg", "uvicorn", "uvloop", "pyroscope-io")
        },
        "clients": args.clients,
        "seconds": seconds,
        "repeats": repeats,
        "load_before": _load(),
    }
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    with (
        private_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="span-profiles-realapp-") as tmp,
    ):
        url = pg.sqlalchemy_url()
        asyncio.run(app.prepare_database(url))
        meta["postgres"] = asyncio.run(_server_version(url))
        receiver = start_receiver_in_thread(port=0, db_path=Path(tmp) / "profiles.db")
        try:
            for repeat in range(repeats):
                order = chosen if repeat % 2 == 0 else chosen[::-1]
                for config in order:
                    print(f"run {repeat + 1}/{repeats}: {config.key} ...", file=sys.stderr)
                    result = harness.run(
                        config,
                        url,
                        receiver,
                        seconds=seconds,
                        clients=args.clients,
                        workdir=Path(tmp),
                        seed=repeat + 1,
                    )
                    row = result.as_dict()
                    row["repeat"] = repeat + 1
                    row["goals"] = (
                        [vars(check) for check in harness.goals(result.judgement)]
                        if config.mode == "spans"
                        else []
                    )
                    runs.append(row)
                    print(_summary(row), file=sys.stderr, flush=True)
        finally:
            receiver.stop()
    meta["load_after"] = _load()
    meta["seconds_total"] = round(time.monotonic() - started, 1)
    order_keys = [c.key for c in chosen]
    runs.sort(key=lambda run: (order_keys.index(run["key"]), run["repeat"]))
    report = render(runs, meta)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "realapp" + (f"-{args.tag}" if args.tag else "") + ("-quick" if args.quick else "")
    (RESULTS / f"{stem}.md").write_text(report + f"\nTotal run time: {meta['seconds_total']} s.\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    return 0


def _summary(row: dict[str, Any]) -> str:
    """One line per run for the progress output."""
    missed = [check["name"] for check in row["goals"] if not check["ok"]]
    return (
        f"  {row['key']}: {row['requests']} requests, {row['judgement']['total']} samples, "
        f"{len(missed)} goals missed {missed}"
    )


async def _server_version(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
