"""Exports of a selection of stored samples to the formats other tools read.

* :func:`to_pprof`: a gzipped pprof ``profile.proto`` (``go tool pprof``, Pyroscope, Grafana),
  one pprof sample per stored sample with its labels, so it holds exactly the selection's samples.
  Two value columns: ``samples/count`` and ``cpu/nanoseconds``. Needs protobuf (the ``receiver``
  extra).
* :func:`to_speedscope`: the speedscope file format (https://www.speedscope.app), one ``sampled``
  profile weighted in CPU nanoseconds, with ``$schema``.
* :func:`to_folded`: Brendan Gregg's collapsed stacks, ``root;...;leaf COUNT`` per line, the counts
  summing to the selection's sample count.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable
from typing import Any

from span_profiles.receiver.query.stacks import SampleRow, StackCount

__all__ = [
    "FORMATS",
    "SPEEDSCOPE_SCHEMA",
    "to_folded",
    "to_pprof",
    "to_speedscope",
]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
"""The ``$schema`` value of a speedscope file."""

FORMATS = {
    "pprof": ("application/octet-stream", ".pb.gz"),
    "speedscope": ("application/json", ".speedscope.json"),
    "folded": ("text/plain; charset=utf-8", ".folded"),
}
"""Export format name -> (media type, file suffix)."""


def to_folded(stacks: Iterable[StackCount]) -> str:
    """Collapsed stacks, one ``a;b;c N`` line per distinct stack (root first), sorted by stack.

    Stacks that differ only in file names are one line. A ``;`` inside a function name would split
    the frame, so it is written as ``:``.
    """
    lines: Counter[str] = Counter()
    for stack in stacks:
        if stack.count:
            frames = [name.replace(";", ":") for name in reversed(stack.functions)]
            lines[";".join(frames) or "[empty stack]"] += stack.count
    return "".join(f"{line} {count}\n" for line, count in sorted(lines.items()))


def to_speedscope(stacks: Iterable[StackCount], name: str, *, exporter: str) -> dict[str, Any]:
    """A speedscope file (as a JSON-ready dict) with one sampled profile named ``name``.

    Samples are the distinct stacks, outermost frame first, weighted by their CPU nanoseconds
    (frames are keyed by function name and file).
    """
    frames: dict[tuple[str, str], int] = {}
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack in stacks:
        indices = []
        for frame in zip(reversed(stack.functions), reversed(stack.files), strict=True):
            index = frames.get(frame)
            if index is None:
                index = frames[frame] = len(frames)
            indices.append(index)
        samples.append(indices)
        weights.append(stack.cpu_ns)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": exporter,
        "activeProfileIndex": 0,
        "shared": {
            "frames": [
                {"name": function, **({"file": file} if file else {})} for function, file in frames
            ]
        },
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
    }


def to_pprof(samples: Iterable[SampleRow]) -> bytes:
    """A gzipped pprof profile holding every sample of ``samples`` with its string labels.

    The period is the most common period among the samples' profiles (10 ms for the
    pyroscope-io agent at its default 100 Hz).
    """
    # Imported here: the other exports need no protobuf.
    from span_profiles.receiver.ingest.decode import encode_pprof
    from span_profiles.receiver.model import Profile, Sample

    rows = list(samples)
    periods = Counter(row.period for row in rows)
    first = min((row.received_at for row in rows), default=0.0)
    last = max((row.received_at for row in rows), default=0.0)
    profile = Profile(
        sample_types=(("samples", "count"), ("cpu", "nanoseconds")),
        period_type=("cpu", "nanoseconds"),
        period=periods.most_common(1)[0][0] if periods else 10_000_000,
        time_nanos=int(first * 1e9),
        duration_nanos=int((last - first) * 1e9),
        samples=tuple(
            Sample(
                values=(row.count, row.cpu_ns),
                functions=row.functions,
                files=row.files,
                labels=row.labels,
            )
            for row in rows
        ),
    )
    # mtime=0: the same samples give the same bytes.
    return gzip.compress(encode_pprof(profile), mtime=0)
