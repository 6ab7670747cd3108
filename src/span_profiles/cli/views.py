"""The ``flame``, ``diff`` and ``export`` commands of ``span-profiles`` (registered by ``cli``).

Usage::

    span-profiles flame (--span-id ID | --span-name NAME) -o FILE.html
    span-profiles diff (--span-id ID | --span-name NAME)
                       [--baseline-span-id ID]... [--baseline-span-name NAME]...
                       [--baseline-since T] [--baseline-until T] [--min-samples N]
                       [--limit N] [--json | --html -o FILE.html]
    span-profiles export (--span-id ID | --span-name NAME) --format pprof|speedscope|folded
                         -o FILE   (``-o -`` writes to standard output)

Each also takes ``--service``, ``--since``/``--until`` and ``--db``. The HTML files are
self-contained (scripts and styles inlined) and open from ``file://`` with no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from span_profiles.cli import _open_store, _positive_int, _span_id_arg, _table, _time_arg
from span_profiles.receiver.query import documents as views
from span_profiles.receiver.query.exports import FORMATS
from span_profiles.receiver.query.flame import DEFAULT_MIN_SAMPLES
from span_profiles.receiver.query.stacks import Selection

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``flame``, ``diff`` and ``export`` to ``commands``; ``parents`` give ``--db``.

    Each sub-parser stores its handler as ``views_handler`` (``main`` calls it).
    """
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--service", help="only profiles of this service_name")
    window.add_argument(
        "--since", type=_time_arg, metavar="T", help="received at or after T (age like 15m, or ISO)"
    )
    window.add_argument(
        "--until",
        type=_time_arg,
        metavar="T",
        help="received at or before T (age like 15m, or ISO)",
    )
    common = [*parents, window]

    flame = commands.add_parser(
        "flame", parents=common, help="write a self-contained flame graph HTML file"
    )
    _which(flame)
    flame.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.html")
    flame.set_defaults(views_handler=_flame)

    diff = commands.add_parser(
        "diff", parents=common, help="compare a span (or span name) with a baseline"
    )
    _which(diff)
    diff.add_argument(
        "--baseline-span-id",
        action="append",
        type=_span_id_arg,
        default=[],
        metavar="ID",
        help="baseline: this span (repeatable; default: the other spans of the same name)",
    )
    diff.add_argument(
        "--baseline-span-name",
        action="append",
        default=[],
        metavar="NAME",
        help="baseline: spans of this name (repeatable)",
    )
    diff.add_argument("--baseline-since", type=_time_arg, metavar="T", help="baseline window start")
    diff.add_argument("--baseline-until", type=_time_arg, metavar="T", help="baseline window end")
    diff.add_argument(
        "--min-samples",
        type=_positive_int,
        default=DEFAULT_MIN_SAMPLES,
        metavar="N",
        help=f"fewest samples per side to compare (default {DEFAULT_MIN_SAMPLES})",
    )
    diff.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="rows (default 20)"
    )
    output = diff.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--html", action="store_true", help="write a diff flame graph to -o FILE")
    diff.add_argument("-o", "--output", type=Path, metavar="FILE.html", help="with --html")
    diff.set_defaults(views_handler=_diff)

    export = commands.add_parser(
        "export", parents=common, help="export samples as pprof, speedscope or folded"
    )
    _which(export)
    export.add_argument("--format", required=True, choices=sorted(FORMATS))
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="output file, - for stdout"
    )
    export.set_defaults(views_handler=_export)


def _which(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--span-id", type=_span_id_arg, metavar="ID", help="samples with this span_id"
    )
    which.add_argument("--span-name", metavar="NAME", help="samples with this span_name")


def _fail(message: str) -> int:
    print(f"span-profiles: {message}", file=sys.stderr)
    return 1


def _write(path: Path, data: bytes) -> None:
    # Written next to the target and renamed, so a failed write leaves no half file behind.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _run(args: argparse.Namespace, build: Callable[[Any], int]) -> int:
    store = _open_store(args)
    if store is None:
        return 1
    try:
        with store:
            return build(store)
    except views.ViewError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {exc.filename}: {exc.strerror}")


def _flame(args: argparse.Namespace) -> int:
    def build(store: Any) -> int:
        if args.span_id is not None:
            html = views.span_html(
                store, args.span_id, service=args.service, since=args.since, until=args.until
            )
            what = f"span {args.span_id}"
        else:
            html = views.endpoint_html(
                store, args.service, args.span_name, since=args.since, until=args.until
            )
            what = f"span_name {args.span_name!r}"
        _write(args.output, html.encode())
        print(f"wrote {args.output}: flame graph of {what}")
        return 0

    return _run(args, build)


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f}"


def _diff(args: argparse.Namespace) -> int:
    if args.html and args.output is None:
        return _fail("--html needs -o FILE.html")
    if args.output is not None and not args.html:
        return _fail("-o goes with --html")
    request = views.DiffRequest(
        span_id=args.span_id,
        span_name=args.span_name,
        service=args.service,
        since=args.since,
        until=args.until,
        baseline_span_ids=tuple(args.baseline_span_id),
        baseline_span_names=tuple(args.baseline_span_name),
        baseline_since=args.baseline_since,
        baseline_until=args.baseline_until,
        min_samples=args.min_samples,
    )

    def build(store: Any) -> int:
        doc = views.diff_json(store, request, limit=args.limit)
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        if args.html:
            _write(args.output, views.diff_html(store, request).encode())
            print(f"wrote {args.output}: diff flame graph")
            if doc["message"]:
                print(doc["message"])
            return 0
        print(f"span:     {doc['span']['description']}: {doc['span_samples']} samples")
        print(f"baseline: {doc['baseline']['description']}: {doc['baseline_samples']} samples")
        if doc["message"]:
            print(doc["message"])
            return 0
        print("shares of each side's own samples; delta in percentage points (+ = more in span)")
        rows = [
            [
                _pct(f["self_share"]),
                _pct(f["baseline_self_share"]),
                _points(f["self_delta"]),
                _pct(f["total_share"]),
                _pct(f["baseline_total_share"]),
                _points(f["total_delta"]),
                f["name"],
            ]
            for f in doc["functions"]
        ]
        header = ["SELF", "BASE", "DELTA", "TOTAL", "BASE", "DELTA", "FUNCTION"]
        print(_table(header, rows, right={0, 1, 2, 3, 4, 5}))
        return 0

    return _run(args, build)


def _export(args: argparse.Namespace) -> int:
    selection = Selection(
        service=args.service,
        since=args.since,
        until=args.until,
        span_ids=(args.span_id,) if args.span_id else (),
        span_names=(args.span_name,) if args.span_name else (),
    )

    def build(store: Any) -> int:
        data, _ = views.export(store, selection, args.format, name=args.span_id or args.span_name)
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            _write(Path(args.output), data)
            print(f"wrote {args.output}: {args.format} export of {selection.describe()}")
        return 0

    return _run(args, build)
