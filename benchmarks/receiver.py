"""Receiver benchmark: ingest rate over HTTP, and query times on stores of 1M and 5M samples.

Usage::

    python benchmarks/receiver.py                       # ingest, then queries at 1M and 5M samples
    python benchmarks/receiver.py --sizes 200000 --repeats 3 --ingest-uploads 20   # a quick run

The stores hold synthetic agent uploads shaped like a busy service's: uploads of 2,000 samples
(10 s at 100 Hz on 2 CPUs), 20 endpoints (``span_name``) with 50 distinct stacks each, 1 to 6
samples per request span, and one long span (a background job) in every upload, the case that
made ``spans`` slow. The first store size is filled through :meth:`ProfileStore.add`, the
receiver's own write path; larger sizes copy it in SQL (new span ids, later arrival times) until
they hold the size asked for, because adding 5M samples one upload at a time takes tens of minutes
on a busy 2-CPU machine. The ingest rate goes through the real receiver (uvicorn, gzip, protobuf
decoding, validation, SQLite) with the same uploads. Query times are the median of ``--repeats``
runs, each run printed; the databases live in a temporary directory (``--keep DIR`` keeps them and
reuses a store already there).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from span_profiles.receiver import (
    ProfileReader,
    ProfileStore,
    Retention,
    Selection,
    start_receiver_in_thread,
)
from span_profiles.receiver.ingest.decode import encode_pprof, encode_push_request
from span_profiles.receiver.model import Profile, Sample, Series
from span_profiles.receiver.storage import rollups
from span_profiles.receiver.storage.retention import read_status

PERIOD = 10_000_000
SAMPLES_PER_UPLOAD = 2000
ENDPOINTS = [f"GET /endpoint/{i}" for i in range(20)]
BACKGROUND_SPAN = "0000000000000bad"
UPLOAD_SECONDS = 10.0


def _stacks(rng: random.Random) -> dict[str, list[tuple[str, ...]]]:
    common = [f"uvicorn.frame_{i}" for i in range(12)]
    result: dict[str, list[tuple[str, ...]]] = {}
    for number, endpoint in enumerate(ENDPOINTS):
        handler = f"app.views.handler_{number}"
        result[endpoint] = [
            tuple(
                [
                    f"lib.module_{rng.randrange(300)}.f_{rng.randrange(40)}"
                    for _ in range(rng.randrange(3, 25))
                ]
                + [handler, *reversed(common)]
            )
            for _ in range(50)
        ]
    return result


def uploads(seed: int, count: int, service: str = "shop") -> Iterator[Series]:
    """``count`` synthetic uploads of :data:`SAMPLES_PER_UPLOAD` samples each."""
    rng = random.Random(seed)
    stacks = _stacks(rng)
    background = (("job.tick", "job.loop", "worker.main"),)
    for _ in range(count):
        samples: list[Sample] = []
        while len(samples) < SAMPLES_PER_UPLOAD:
            if rng.random() < 0.02:
                labels: tuple[tuple[str, str], ...] = (
                    ("span_id", BACKGROUND_SPAN),
                    ("span_name", "job"),
                )
                functions = background[0]
                samples.append(Sample((PERIOD,), functions, ("",) * len(functions), labels))
                continue
            endpoint = rng.choice(ENDPOINTS)
            span_id = f"{rng.getrandbits(64):016x}"
            labels = (("span_id", span_id), ("span_name", endpoint))
            for _ in range(rng.randrange(1, 7)):
                functions = rng.choice(stacks[endpoint])
                samples.append(Sample((PERIOD,), functions, ("",) * len(functions), labels))
        profile = Profile(
            sample_types=(("cpu", "nanoseconds"),),
            period_type=("cpu", "nanoseconds"),
            period=PERIOD,
            time_nanos=0,
            duration_nanos=int(UPLOAD_SECONDS * 1e9),
            samples=tuple(samples[:SAMPLES_PER_UPLOAD]),
        )
        yield Series(
            labels=(("__name__", "process_cpu"), ("service_name", service)), profiles=(profile,)
        )


def fill(path: Path, samples: int) -> tuple[float, float]:
    """Fill a store with ``samples`` samples; returns (seconds, samples per second)."""
    count = samples // SAMPLES_PER_UPLOAD
    start = time.perf_counter()
    now = time.time() - count * UPLOAD_SECONDS
    with ProfileStore(path, retention=Retention(max_age=None, max_bytes=None)) as store:
        for number, one in enumerate(uploads(1, count)):
            store.add([one], received_at=now + number * UPLOAD_SECONDS)
    elapsed = time.perf_counter() - start
    return elapsed, samples / elapsed


def replicate(source: Path, path: Path, samples: int) -> float:
    """Copy the store at ``source`` into ``path`` and append copies of it until it holds ``samples``.

    Each copy gets new span ids (the first hex digit replaced by the copy's number, the background
    span kept) and arrival times before the previous copy. Returns the seconds it took.
    """
    start = time.perf_counter()
    shutil.copyfile(source, path)
    db = sqlite3.connect(path, isolation_level=None)
    max_profile, max_sample, first, last = db.execute(
        "SELECT (SELECT MAX(id) FROM profiles), (SELECT MAX(id) FROM samples),"
        " (SELECT MIN(received_at) FROM profiles), (SELECT MAX(received_at) FROM profiles)"
    ).fetchone()
    per_copy = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    copies = -(-samples // per_copy)
    span = f"CASE WHEN {{0}} = '{BACKGROUND_SPAN}' THEN {{0}} ELSE :digit || substr({{0}}, 2) END"
    for copy in range(1, copies):
        names = {
            "profiles": max_profile * copy,
            "samples": max_sample * copy,
            "shift": -(last - first + UPLOAD_SECONDS) * copy,
            "digit": f"{copy:x}",
            "limit_p": max_profile,
            "limit_s": max_sample,
        }
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO profiles (id, service, received_at, series_labels, sample_type,"
            " sample_unit, period_type, period_unit, period, time_nanos, duration_nanos,"
            " profile_type) SELECT id + :profiles, service, received_at + :shift, series_labels,"
            " sample_type, sample_unit, period_type, period_unit, period, time_nanos,"
            " duration_nanos, profile_type FROM profiles WHERE id <= :limit_p",
            names,
        )
        labels = (
            "(SELECT json_group_array(json_array(j.value ->> 0, CASE WHEN j.value ->> 0 = 'span_id'"
            f" THEN {span.format('j.value ->> 1')} ELSE j.value ->> 1 END)) FROM json_each(labels) j)"
        )
        db.execute(
            f"INSERT INTO samples SELECT id + :samples, profile_id + :profiles, stack_id, count, value, {labels}"
            " FROM samples WHERE id <= :limit_s",
            names,
        )
        db.execute(
            "INSERT INTO sample_labels SELECT sample_id + :samples, key, CASE WHEN key = 'span_id'"
            f" THEN {span.format('value')} ELSE value END FROM sample_labels WHERE sample_id <= :limit_s",
            names,
        )
        db.execute(
            "INSERT INTO span_stats (profile_id, span_id, span_name, first, count, nanos)"
            f" SELECT profile_id + :profiles, {span.format('span_id')}, span_name, first, count,"
            " nanos FROM span_stats WHERE profile_id <= :limit_p",
            names,
        )
        db.execute(
            "INSERT INTO name_stacks (profile_id, span_name, stack_id, first, count, nanos)"
            " SELECT profile_id + :profiles, span_name, stack_id, first, count, nanos"
            " FROM name_stacks WHERE profile_id <= :limit_p",
            names,
        )
        db.execute("COMMIT")
    # The per-span and hourly rollups, from the per-profile rows of every copy.
    db.execute("BEGIN")
    rollups.rebuild_all(db.cursor())
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def ingest_rate(path: Path, count: int) -> float:
    """Samples per second through the real receiver: gzip + protobuf + validation + SQLite."""
    bodies = [
        gzip.compress(encode_push_request([(one.labels, [encode_pprof(p) for p in one.profiles])]))
        for one in uploads(2, count)
    ]
    path.unlink(missing_ok=True)
    receiver = start_receiver_in_thread(port=0, db_path=path)
    headers = {"content-type": "application/proto", "content-encoding": "gzip"}
    try:
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=60)
        start = time.perf_counter()
        for body in bodies:
            connection.request("POST", "/push.v1.PusherService/Push", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
        elapsed = time.perf_counter() - start
        connection.close()
    finally:
        receiver.stop()
    return count * SAMPLES_PER_UPLOAD / elapsed


def _timed(function: Callable[[], object], repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return runs


def queries(path: Path, repeats: int) -> list[tuple[str, list[float]]]:
    """Time each query the CLI and the web UI run, on a reader as `top` and `spans` open it."""
    with ProfileReader(path) as reader:
        # The newest request span (the background job has the most samples of the newest upload).
        newest = next(s for s in reader.spans(limit=100) if s.span_id != BACKGROUND_SPAN)
        status = read_status(path)
        since = (status.newest or 0) - 3600
        one = Selection(span_ids=(newest.span_id,))
        background = Selection(span_ids=(BACKGROUND_SPAN,))
        endpoint = Selection(span_names=(ENDPOINTS[3],))
        cases: list[tuple[str, Callable[[], object]]] = [
            ("spans (newest 50)", lambda: reader.spans(limit=50)),
            (
                "spans --service shop --limit 1000",
                lambda: reader.spans(Selection(service="shop"), limit=1000),
            ),
            ("spans --span-name (endpoint's spans)", lambda: reader.spans(endpoint, limit=50)),
            ("top --span-id (one request)", lambda: reader.top(one)),
            ("top --span-id (span in every upload)", lambda: reader.top(background)),
            (
                "total_count --span-id (span in every upload)",
                lambda: reader.total_count(background),
            ),
            ("top --span-name (one endpoint, all time)", lambda: reader.top(endpoint)),
            (
                "top --span-name --since 1h",
                lambda: reader.top(Selection(span_names=(ENDPOINTS[3],), since=since)),
            ),
            ("top (whole service)", lambda: reader.top(Selection(service="shop"))),
            ("samples --span-id (one request)", lambda: list(reader.samples(one))),
            ("retention_status (doctor)", lambda: read_status(path)),
        ]
        return [(name, _timed(function, repeats)) for name, function in cases]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000", help="store sizes in samples")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ingest-uploads", type=int, default=100, help="uploads sent over HTTP")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases in DIR")
    parser.add_argument("--no-ingest", action="store_true", help="skip the HTTP ingest rate")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.no_ingest:
            rates = [
                ingest_rate(workdir / f"ingest-{run}.db", args.ingest_uploads) for run in range(3)
            ]
            print(
                f"ingest over HTTP ({args.ingest_uploads} uploads of {SAMPLES_PER_UPLOAD} samples,"
                f" gzip): median {statistics.median(rates):,.0f} samples/s; runs: "
                + ", ".join(f"{r:,.0f}" for r in rates),
                flush=True,
            )
        first: Path | None = None
        for size in sizes:
            path = workdir / f"store-{size}.db"
            if first is None:
                if path.exists():
                    # Opening it for writing upgrades an older schema.
                    ProfileStore(path, retention=Retention(max_age=None, max_bytes=None)).close()
                    how = "reused from --keep"
                else:
                    seconds, rate = fill(path, size)
                    how = (
                        f"filled in {seconds:.1f} s, {rate:,.0f} samples/s through ProfileStore.add"
                    )
                first = path
            else:
                path.unlink(missing_ok=True)
                how = f"copied from the first store in {replicate(first, path, size):.1f} s"
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
                held = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            size_mib = path.stat().st_size / 2**20
            print(f"\nstore of {held:,} samples ({how}), {size_mib:,.0f} MiB", flush=True)
            print(f"  {'query':<48} {'median s':>9}  runs (s)")
            for name, runs in queries(path, args.repeats):
                print(
                    f"  {name:<48} {statistics.median(runs):9.4f}  "
                    + " ".join(f"{r:.4f}" for r in runs),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
