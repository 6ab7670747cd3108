"""How long the web UI's queries take on a large store: overview, span page, diff, endpoint page,
of CPU and of wall-clock samples.

Run: ``python benchmarks/ui_queries.py [--samples 5000000] [--db PATH] [--repeat 5] [--out F]``.

The first run builds the store (``--db``, default ``$TMPDIR/span-profiles-ui-bench-<N>-wall.db``;
``N`` stored CPU samples of one period each: ``N / 20`` requests of 20 samples over 24 hours,
about 10,400 requests an hour, 2 services x 5 span names, 400 distinct stacks of depth 14-32,
uploads of 2,000 samples; and as many wall samples of the same requests, in the same pushes: each
an await site on top of the request's outer frames, weighted 5-50 ms; ``--no-wall`` builds the
CPU samples only, in ``...-<N>.db``) through :meth:`ProfileStore.add`, and keeps it for later
runs. Each query then runs ``--repeat`` times, interleaved (overview, diff, ..., span page,
endpoint page, overview, ...), each time through the document the page itself loads
(:mod:`span_profiles.receiver.query.documents`, and for the pages with a tab per type
:func:`span_profiles.receiver.web.pages.span_page` / ``endpoint_page``; no HTTP). Printed:
every run's time, and the median; written to ``--out`` as JSON with the load average.

Windows: the overview and the endpoint page in the UI's default window (the last hour) and over
the whole store; the span page and the diff for the span that used the most CPU in the last hour,
against its default baseline (the other spans of its name and service in the window).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from span_profiles.receiver import ProfileReader, ProfileStore, Selection  # noqa: E402
from span_profiles.receiver.model import Profile, Sample, Series  # noqa: E402

PERIOD = 10_000_000
DAY = 86_400.0
SERVICES = ("shop", "search")
NAMES = ("GET /", "GET /items", "POST /cart", "GET /search", "GET /health")
# Where the requests wait: the leaf of their wall samples.
AWAIT_SITES = (
    "asyncpg.pool.Pool.acquire",
    "asyncio.locks.Lock.acquire",
    "httpx.AsyncClient.send",
    "asyncio.tasks.sleep",
)


def _stacks(rng: random.Random) -> list[tuple[str, ...]]:
    frames = [f"module_{i // 20}.function_{i}" for i in range(600)]
    stacks = []
    for _ in range(400):
        depth = rng.randint(12, 30)
        stacks.append((*(rng.choice(frames) for _ in range(depth)), "main", "<module>"))
    return stacks


def _profile(kind: str, when: float, samples: list[Sample]) -> Profile:
    return Profile(
        sample_types=((kind, "nanoseconds"),),
        period_type=(kind, "nanoseconds"),
        period=PERIOD,
        time_nanos=int(when * 1e9),
        duration_nanos=10_000_000_000,
        samples=tuple(samples),
    )


def build(path: Path, total: int, *, now: float, wall: bool = True) -> None:
    """Fill a new store at ``path`` with ``total`` CPU samples over the 24 hours before ``now``
    and, with ``wall``, as many wall samples of the same requests (in the same uploads)."""
    rng = random.Random(42)
    stacks = _stacks(rng)
    per_upload = 2_000
    uploads = max(total // per_upload, 1)
    request = 0
    started = time.perf_counter()
    with ProfileStore(path) as store:
        for upload in range(uploads):
            when = now - DAY + DAY * upload / uploads
            samples = []
            waits = []
            # 100 requests of 20 samples (one stored row each) over their endpoint's stacks.
            for _ in range(per_upload // 20):
                request += 1
                span_id = f"{rng.getrandbits(64):016x}"
                name_index = request % len(NAMES)
                labels = (("span_id", span_id), ("span_name", NAMES[name_index]))
                base = name_index * 60
                for _ in range(20):
                    stack = stacks[(base + rng.randrange(80)) % len(stacks)]
                    samples.append(
                        Sample(
                            values=(PERIOD,),
                            functions=stack,
                            files=("",) * len(stack),
                            labels=labels,
                        )
                    )
                    if wall:
                        # The same request waiting: an await site on top of one of its stacks,
                        # weighted by the time it waited there (5-50 ms).
                        site = AWAIT_SITES[rng.randrange(len(AWAIT_SITES))]
                        waiting = (site, *stack[-rng.randint(3, 8) :])
                        waits.append(
                            Sample(
                                values=(rng.randrange(5, 51) * 1_000_000,),
                                functions=waiting,
                                files=("",) * len(waiting),
                                labels=labels,
                            )
                        )
            service = SERVICES[upload % len(SERVICES)]
            series = [
                Series(
                    labels=(("service_name", service),),
                    profiles=(_profile("cpu", when, samples),),
                )
            ]
            if wall:
                series.append(
                    Series(
                        labels=(("__name__", "wall"), ("service_name", service)),
                        profiles=(_profile("wall", when, waits),),
                    )
                )
            store.add(series, received_at=when)
            if upload % 250 == 0:
                rows = (upload + 1) * per_upload * (2 if wall else 1)
                rate = rows / (time.perf_counter() - started)
                print(f"  built {rows:,} rows ({rate:,.0f}/s)", flush=True)
    rows = uploads * per_upload * (2 if wall else 1)
    print(f"built {rows:,} stored samples in {time.perf_counter() - started:.0f} s")


def _views_of_type(
    reader: ProfileReader, kind: str, hour: Selection, span_id: str, service: str, name: str
) -> list[tuple[str, Callable[[], Any]]]:
    """The views of one profile type: overview, diff, span list, exports."""
    from span_profiles.receiver.query import documents, exports

    by = "" if kind == "cpu" else f" ({kind})"
    typed = Selection(profile_type=kind)
    in_hour = replace(hour, profile_type=kind)
    endpoint = Selection(service=service, span_names=(name,), profile_type=kind)
    span = Selection(span_ids=(span_id,), profile_type=kind)
    recent = documents.DiffRequest(span_id=span_id, since=hour.since, profile_type=kind)
    whole = documents.DiffRequest(span_id=span_id, profile_type=kind)
    return [
        (f"overview{by}, last hour", lambda: documents.overview_json(reader, in_hour)),
        (f"overview{by}, whole store", lambda: documents.overview_json(reader, typed)),
        (f"diff{by} vs default baseline, last hour", lambda: documents.diff_json(reader, recent)),
        (f"diff{by} vs default baseline, whole store", lambda: documents.diff_json(reader, whole)),
        (f"span list{by} (newest 100), whole store", lambda: documents.spans_json(reader, typed)),
        (f"export pprof{by}, the span", lambda: exports.export(reader, span, "pprof", title="x")),
        (
            f"export folded{by}, endpoint, whole store",
            lambda: exports.export(reader, endpoint, "folded", title="x"),
        ),
    ]


def _time(label: str, call: Callable[[], Any], runs: dict[str, list[float]]) -> Any:
    started = time.perf_counter()
    result = call()
    runs.setdefault(label, []).append(time.perf_counter() - started)
    return result


def main() -> int:
    """Build the store if needed, then time the views; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "ui_queries.json",
        help="where the runs and medians go as JSON (default benchmarks/results/ui_queries.json)",
    )
    parser.add_argument(
        "--no-wall", action="store_true", help="build a store of CPU samples only (as before #19)"
    )
    args = parser.parse_args()
    suffix = "" if args.no_wall else "-wall"
    path = (
        args.db or Path(tempfile.gettempdir()) / f"span-profiles-ui-bench-{args.samples}{suffix}.db"
    )
    if not path.exists():
        print(f"building {path} ...", flush=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build(partial, args.samples, now=time.time(), wall=not args.no_wall)
        partial.rename(path)
    else:
        # Opening it for writing migrates a store of an older schema version.
        started = time.perf_counter()
        ProfileStore(path).close()
        print(f"opened {path} for writing in {time.perf_counter() - started:.1f} s")
    if args.build_only:
        return 0

    from span_profiles.receiver.query import documents
    from span_profiles.receiver.web import pages

    # The store was built relative to its own build time: windows are relative to its newest row.
    with ProfileReader(path) as reader:
        newest = reader.newest_arrival()
        assert newest is not None, "the store is empty"
        hour = Selection(since=newest - 3600.0, until=newest)
        overview = documents.overview_json(reader, hour)
        top = overview["top_spans"][0]
        span_id, service, name = top["span_id"], top["service"], top["span_name"]
        rows = reader.fetch(
            "SELECT p.profile_type, COUNT(*), TOTAL(s.count) FROM samples s"
            " JOIN profiles p ON p.id = s.profile_id GROUP BY 1"
        )
        store = {kind: {"stored_samples": n, "samples": total} for kind, n, total in rows}
        for kind, counts in store.items():
            print(f"store {path}: {kind}: {counts['stored_samples']:,} stored samples")
        everything = documents.overview_json(reader)
        print(f"spans in the last hour: {sum(e['requests'] for e in overview['endpoints']):,}")
        print(f"spans in the store: {sum(e['requests'] for e in everything['endpoints']):,}")
        print(f"top span of the last hour: {span_id} ({name!r}, {top['samples']} samples)")
        in_hour = Selection(service=service, since=hour.since, until=hour.until)
        views: list[tuple[str, Callable[[], Any]]] = []
        for kind in ("cpu", "wall"):
            views += _views_of_type(reader, kind, hour, span_id, service, name)
        # The pages with a tab per type build every type's document.
        views += [
            ("span page (CPU and wall tabs)", lambda: pages.span_page(reader, span_id)),
            (
                "endpoint page (both tabs), last hour",
                lambda: pages.endpoint_page(reader, name, in_hour),
            ),
            (
                "endpoint page (both tabs), whole store",
                lambda: pages.endpoint_page(reader, name, Selection(service=service)),
            ),
        ]
        runs: dict[str, list[float]] = {}
        started = time.time()
        for _ in range(args.repeat):
            for label, view in views:
                _time(label, view, runs)
    print()
    print(f"{'view':44} {'median':>8}  runs (s)")
    for label, times in runs.items():
        print(f"{label:44} {statistics.median(times):8.3f}  " + " ".join(f"{t:.3f}" for t in times))
    result = {
        "command": " ".join(sys.argv),
        "started": started,
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "store": {"path": str(path), "types": store, "top_span": span_id},
        "runs": runs,
        "medians": {label: statistics.median(times) for label, times in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
