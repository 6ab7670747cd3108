"""``span-profiles flame``, ``diff`` and ``export``: the web UI's views as files and tables.

Usage::

    span-profiles flame (--span-id ID | --span-name NAME) -o FILE.html
    span-profiles diff (--span-id ID | --span-name NAME)
                       [--baseline-span-id ID]... [--baseline-span-name NAME]...
                       [--baseline-since T] [--baseline-until T] [--min-samples N]
                       [--limit N] [--json | --html -o FILE.html]
    span-profiles export (--span-id ID | --span-name NAME) --format FORMAT
                         -o FILE   (``-o -`` writes to standard output)

Each also takes ``--service``, ``--since``/``--until``, ``--type cpu|wall`` (the profile type,
``cpu`` by default) and ``--db``. ``flame`` writes a tab per type, ``--type`` first. The HTML files are
self-contained (scripts and styles inlined) and open from ``file://`` with no network. The formats
are those of the registry, :data:`span_profiles.receiver.query.exports.FORMATS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from span_profiles.cli._common import (
    Command,
    add_which,
    add_window,
    fail,
    open_reader,
    positive_int,
    selection,
    span_id_arg,
    table,
    time_arg,
)
from span_profiles.receiver.model import CPU
from span_profiles.receiver.query import documents, exports
from span_profiles.receiver.query.flame import DEFAULT_MIN_SAMPLES
from span_profiles.receiver.query.reader import ProfileReader
from span_profiles.receiver.query.selection import Selection

__all__ = ["COMMANDS"]


def _write(path: Path, data: bytes) -> None:
    # Written next to the target and renamed, so a failed write leaves no half file behind.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _run(args: argparse.Namespace, build: Callable[[ProfileReader], int]) -> int:
    reader = open_reader(args)
    if reader is None:
        return 1
    try:
        with reader:
            return build(reader)
    except documents.ViewError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write {exc.filename}: {exc.strerror}")


def _window(args: argparse.Namespace) -> Selection:
    return Selection(
        service=args.service, since=args.since, until=args.until, profile_type=args.profile_type
    )


def _flame_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_which(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.html")


def _flame(args: argparse.Namespace) -> int:
    # Imported here: the other commands need no Jinja2.
    from span_profiles.receiver.web import pages

    def build(reader: ProfileReader) -> int:
        if args.span_id is not None:
            html = pages.span_html(reader, args.span_id, _window(args))
            what = f"span {args.span_id}"
        else:
            html = pages.endpoint_html(reader, args.span_name, _window(args))
            what = f"span_name {args.span_name!r}"
        _write(args.output, html.encode())
        kind = "" if args.profile_type == CPU else f" ({args.profile_type})"
        print(f"wrote {args.output}: flame graph of {what}{kind}")
        return 0

    return _run(args, build)


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_which(parser)
    parser.add_argument(
        "--baseline-span-id",
        action="append",
        type=span_id_arg,
        default=[],
        metavar="ID",
        help="baseline: this span (repeatable; default: the other spans of the same name)",
    )
    parser.add_argument(
        "--baseline-span-name",
        action="append",
        default=[],
        metavar="NAME",
        help="baseline: spans of this name (repeatable)",
    )
    parser.add_argument(
        "--baseline-since", type=time_arg, metavar="T", help="baseline window start"
    )
    parser.add_argument("--baseline-until", type=time_arg, metavar="T", help="baseline window end")
    parser.add_argument(
        "--min-samples",
        type=positive_int,
        default=DEFAULT_MIN_SAMPLES,
        metavar="N",
        help=f"fewest samples per side to compare (default {DEFAULT_MIN_SAMPLES})",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="rows (default 20)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--html", action="store_true", help="write a diff flame graph to -o FILE")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE.html", help="with --html")


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f}"


def _diff(args: argparse.Namespace) -> int:
    if args.html and args.output is None:
        return fail("--html needs -o FILE.html")
    if args.output is not None and not args.html:
        return fail("-o goes with --html")
    request = documents.DiffRequest(
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
        profile_type=args.profile_type,
    )

    def build(reader: ProfileReader) -> int:
        doc = documents.diff_json(reader, request, limit=args.limit)
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        if args.html:
            from span_profiles.receiver.web import pages

            _write(args.output, pages.diff_html(reader, request).encode())
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
        print(table(header, rows, right={0, 1, 2, 3, 4, 5}))
        return 0

    return _run(args, build)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_which(parser)
    parser.add_argument("--format", required=True, choices=list(exports.FORMATS))
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="output file, - for stdout"
    )


def _export(args: argparse.Namespace) -> int:
    where = selection(args)

    def build(reader: ProfileReader) -> int:
        data, _ = exports.export(reader, where, args.format, title=args.span_id or args.span_name)
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            _write(Path(args.output), data)
            print(f"wrote {args.output}: {args.format} export of {where.describe()}")
        return 0

    return _run(args, build)


COMMANDS = (
    Command("flame", "write a self-contained flame graph HTML file", _flame_arguments, _flame),
    Command("diff", "compare a span (or span name) with a baseline", _diff_arguments, _diff),
    Command(
        "export",
        f"export samples as {', '.join(exports.FORMATS)}",
        _export_arguments,
        _export,
    ),
)
