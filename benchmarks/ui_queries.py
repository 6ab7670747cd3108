"""How long the web UI's queries take on a large store: overview, span page, diff, endpoint page.

Run: ``python benchmarks/ui_queries.py [--samples 5000000] [--db PATH] [--repeat 5]``.

The first run builds the store (``--db``, default ``$TMPDIR/span-profiles-ui-bench-<N>.db``; ``N``
stored samples of one period each: ``N / 20`` requests of 20 samples over 24 hours, about 10,400
requests an hour, 2 services x 5 span names, 400 distinct stacks of depth 14-32, uploads of 2,000
samples) through
:meth:`ProfileStore.add`, and keeps it for later runs. Each query then runs ``--repeat`` times,
interleaved (overview, span, diff, endpoint, overview, ...), each time through the JSON view the
page itself loads (``span_profiles.receiver.web.ui`` view functions, no HTTP). Printed: every run's
time, and the median.

Windows: the overview and the endpoint page in the UI's default window (the last hour) and over
the whole store; the span page and the diff for the span that used the most CPU in the last hour,
against its default baseline (the other spans of its name and service in the window).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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


def _stacks(rng: random.Random) -> list[tuple[str, ...]]:
    frames = [f"module_{i // 20}.function_{i}" for i in range(600)]
    stacks = []
    for _ in range(400):
        depth = rng.randint(12, 30)
        stacks.append((*(rng.choice(frames) for _ in range(depth)), "main", "<module>"))
    return stacks


def build(path: Path, total: int, *, now: float) -> None:
    """Fill a new store at ``path`` with ``total`` samples over the 24 hours before ``now``."""
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
            profile = Profile(
                sample_types=(("cpu", "nanoseconds"),),
                period_type=("cpu", "nanoseconds"),
                period=PERIOD,
                time_nanos=int(when * 1e9),
                duration_nanos=10_000_000_000,
                samples=tuple(samples),
            )
            service = SERVICES[upload % len(SERVICES)]
            store.add(
                [Series(labels=(("service_name", service),), profiles=(profile,))],
                received_at=when,
            )
            if upload % 250 == 0:
                rate = (upload + 1) * per_upload / (time.perf_counter() - started)
                print(f"  built {(upload + 1) * per_upload:,} rows ({rate:,.0f}/s)", flush=True)
    print(f"built {uploads * per_upload:,} stored samples in {time.perf_counter() - started:.0f} s")


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
    args = parser.parse_args()
    path = args.db or Path(tempfile.gettempdir()) / f"span-profiles-ui-bench-{args.samples}.db"
    if not path.exists():
        print(f"building {path} ...", flush=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build(partial, args.samples, now=time.time())
        partial.rename(path)
    else:
        # Opening it for writing migrates a store of an older schema version.
        started = time.perf_counter()
        ProfileStore(path).close()
        print(f"opened {path} for writing in {time.perf_counter() - started:.1f} s")
    if args.build_only:
        return 0

    from span_profiles.receiver.query import documents, exports

    # The store was built relative to its own build time: windows are relative to its newest row.
    with ProfileReader(path) as reader:
        newest = reader.newest_arrival()
        assert newest is not None, "the store is empty"
        hour = Selection(since=newest - 3600.0, until=newest)
        overview = documents.overview_json(reader, hour)
        top = overview["top_spans"][0]
        span_id, service, name = top["span_id"], top["service"], top["span_name"]
        rows = reader.fetch("SELECT COUNT(*), TOTAL(count) FROM samples")[0]
        print(f"store {path}: {rows[0]:,} stored samples ({rows[1]:,.0f} samples)")
        everything = documents.overview_json(reader)
        print(f"spans in the last hour: {sum(e['requests'] for e in overview['endpoints']):,}")
        print(f"spans in the store: {sum(e['requests'] for e in everything['endpoints']):,}")
        print(f"top span of the last hour: {span_id} ({name!r}, {top['samples']} samples)")
        endpoint = Selection(service=service)
        span = Selection(span_ids=(span_id,))
        views: list[tuple[str, Callable[[], Any]]] = [
            ("overview, last hour", lambda: documents.overview_json(reader, hour)),
            ("overview, whole store", lambda: documents.overview_json(reader)),
            ("span page", lambda: documents.span_json(reader, span_id)),
            (
                "endpoint page, last hour",
                lambda: documents.endpoint_json(
                    reader, name, Selection(service=service, since=hour.since, until=hour.until)
                ),
            ),
            ("endpoint page, whole store", lambda: documents.endpoint_json(reader, name, endpoint)),
            (
                "diff vs default baseline, last hour",
                lambda: documents.diff_json(
                    reader, documents.DiffRequest(span_id=span_id, since=hour.since)
                ),
            ),
            (
                "diff vs default baseline, whole store",
                lambda: documents.diff_json(reader, documents.DiffRequest(span_id=span_id)),
            ),
            ("span list (newest 100), whole store", lambda: documents.spans_json(reader)),
            ("export pprof, the span", lambda: exports.export(reader, span, "pprof", title="x")),
            (
                "export folded, endpoint, whole store",
                lambda: exports.export(
                    reader, Selection(service=service, span_names=(name,)), "folded", title="x"
                ),
            ),
        ]
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for label, view in views:
                _time(label, view, runs)
    print()
    print(f"{'view':40} {'median':>8}  runs (s)")
    for label, times in runs.items():
        print(f"{label:40} {statistics.median(times):8.3f}  " + " ".join(f"{t:.3f}" for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
