"""Exports of a selection of stored samples to the formats other tools read: a registry.

Each :class:`ExportFormat` in :data:`FORMATS` is one entry: its name, media type, file suffix and
how it is written. The command line's ``--format``, the JSON API's ``/api/export/{format}`` and
the links on every page list what :data:`FORMATS` holds: a new format is one more entry.

* ``pprof``: a gzipped pprof ``profile.proto`` (``go tool pprof``, Pyroscope, Grafana), one pprof
  sample per stored sample with its labels, so it holds exactly the selection's samples. Two value
  columns: ``samples/count`` and ``<type>/nanoseconds`` (``cpu/nanoseconds`` for CPU). Needs
  protobuf (the ``receiver`` extra).
* ``speedscope``: the speedscope file format (https://www.speedscope.app), one ``sampled`` profile
  weighted in nanoseconds (of CPU or wall-clock time), with ``$schema``; its name says the type.
* ``folded``: Brendan Gregg's collapsed stacks, ``root;...;leaf COUNT`` per line, the counts
  summing to the selection's sample count (sampling periods of the type: 10 ms of CPU, or of
  wall-clock time, at 100 Hz).

Every format holds one profile type, the selection's.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from span_profiles.receiver.model import CPU
from span_profiles.receiver.query.errors import NotFound, ViewError
from span_profiles.receiver.query.samples import StoredSample, has_samples, iter_samples
from span_profiles.receiver.query.selection import Selection
from span_profiles.receiver.query.sql import Source
from span_profiles.receiver.query.stacks import StackCount, stack_counts

__all__ = [
    "FORMATS",
    "SPEEDSCOPE_SCHEMA",
    "ExportFormat",
    "export",
    "to_folded",
    "to_pprof",
    "to_speedscope",
]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
"""The ``$schema`` value of a speedscope file."""


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

    Samples are the distinct stacks, outermost frame first, weighted by their nanoseconds
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
        weights.append(stack.nanos)
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


def to_pprof(samples: Iterable[StoredSample], *, profile_type: str = CPU) -> bytes:
    """A gzipped pprof profile holding every sample of ``samples`` with its string labels.

    Value columns ``samples/count`` and ``<profile_type>/nanoseconds`` (``wall/nanoseconds`` for
    wall samples), period type ``<profile_type>/nanoseconds``. The period is the most
    common period among the samples' profiles (10 ms for the pyroscope-io agent at its default
    100 Hz).
    """
    # Imported here: the other exports need no protobuf.
    from span_profiles.receiver.ingest.decode import encode_pprof
    from span_profiles.receiver.model import Profile, Sample

    rows = list(samples)
    periods = Counter(row.period for row in rows)
    first = min((row.received_at for row in rows), default=0.0)
    last = max((row.received_at for row in rows), default=0.0)
    profile = Profile(
        sample_types=(("samples", "count"), (profile_type, "nanoseconds")),
        period_type=(profile_type, "nanoseconds"),
        period=periods.most_common(1)[0][0] if periods else 10_000_000,
        time_nanos=int(first * 1e9),
        duration_nanos=int((last - first) * 1e9),
        samples=tuple(
            Sample(
                values=(row.count, row.nanos),
                functions=row.functions,
                files=row.files,
                labels=row.labels,
            )
            for row in rows
        ),
    )
    # mtime=0: the same samples give the same bytes.
    return gzip.compress(encode_pprof(profile), mtime=0)


def _version() -> str:
    try:
        return importlib.metadata.version("span-profiles")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ExportFormat:
    """One export format: what the registry :data:`FORMATS` holds per name."""

    name: str
    """As the command line's ``--format`` and ``/api/export/{name}`` take it."""
    media_type: str
    suffix: str
    """Of the downloaded file, e.g. ``.pb.gz``."""
    write: Callable[[Source, Selection, str], bytes]
    """``(reader, selection, title)`` -> the file; only called for a selection with samples."""


def _write_pprof(source: Source, selection: Selection, title: str) -> bytes:
    return to_pprof(iter_samples(source, selection), profile_type=selection.profile_type)


def _write_speedscope(source: Source, selection: Selection, title: str) -> bytes:
    name = title if selection.profile_type == CPU else f"{title} ({selection.profile_type})"
    document = to_speedscope(
        stack_counts(source, selection), name, exporter=f"span-profiles {_version()}"
    )
    return json.dumps(document).encode()


def _write_folded(source: Source, selection: Selection, title: str) -> bytes:
    return to_folded(stack_counts(source, selection)).encode()


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat("pprof", "application/octet-stream", ".pb.gz", _write_pprof),
        ExportFormat("speedscope", "application/json", ".speedscope.json", _write_speedscope),
        ExportFormat("folded", "text/plain; charset=utf-8", ".folded", _write_folded),
    )
}
"""The export formats by name, in the order pages list them."""


def export(
    source: Source, selection: Selection, fmt: str, *, title: str
) -> tuple[bytes, ExportFormat]:
    """The selection's samples as ``fmt``, and the format (its media type and suffix).

    Raises :class:`ViewError` for a format not in :data:`FORMATS`, :class:`NotFound` without samples.
    """
    found = FORMATS.get(fmt)
    if found is None:
        raise ViewError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not has_samples(source, selection):
        raise NotFound(f"no samples for {selection.describe()}")
    return found.write(source, selection, title), found
