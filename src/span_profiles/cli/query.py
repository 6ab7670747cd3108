"""``span-profiles top`` and ``span-profiles spans``: a span's top functions, the spans seen.

Both open the database read-only, so they work on read-only storage and never wait for the
receiver; both read through the same :class:`~span_profiles.receiver.query.reader.ProfileReader`
as the web UI.
"""

from __future__ import annotations

import argparse
import json

from span_profiles.cli._common import (
    Command,
    add_which,
    add_window,
    iso,
    open_reader,
    positive_int,
    selection,
    table,
)
from span_profiles.receiver.model import CPU, seconds_key

__all__ = ["COMMANDS"]


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _top_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_which(parser)
    parser.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="rows (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _top(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    if reader is None:
        return 1
    where = selection(args)
    with reader:
        stats = reader.top(where, limit=args.limit)
        total = reader.total_count(where)
    if args.json:
        document = {
            "filter": {
                "span_id": args.span_id,
                "span_name": args.span_name,
                "service": where.service,
                "since": where.since,
                "until": where.until,
                "profile_type": where.profile_type,
            },
            "total_count": total,
            "functions": [
                {"name": s.name, "self_count": s.self_count, "total_count": s.total_count}
                for s in stats
            ],
        }
        print(json.dumps(document, indent=2))
        return 0
    what = f"span_id {args.span_id}" if args.span_id else f"span_name {args.span_name!r}"
    kind = "" if where.profile_type == CPU else f"{where.profile_type} "
    if not total:
        print(f"no {kind}samples for {what}")
        return 0
    print(f"{total} {kind}samples for {what}")
    rows = [
        [
            str(s.self_count),
            _percent(s.self_count, total),
            str(s.total_count),
            _percent(s.total_count, total),
            s.name,
        ]
        for s in stats
    ]
    print(table(["SELF", "SELF%", "TOTAL", "TOTAL%", "FUNCTION"], rows, right={0, 1, 2, 3}))
    return 0


def _spans_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    parser.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="rows (default 50)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _spans(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    if reader is None:
        return 1
    where = selection(args)
    with reader:
        stats = reader.spans(where, limit=args.limit)
    if args.json:
        document = {
            "profile_type": where.profile_type,
            "spans": [
                {
                    "span_id": s.span_id,
                    "span_name": s.span_name,
                    "sample_count": s.sample_count,
                    seconds_key(where.profile_type): round(s.nanos / 1e9, 6),
                    "last_seen": s.last_seen,
                }
                for s in stats
            ],
        }
        print(json.dumps(document, indent=2))
        return 0
    if not stats:
        print(
            "no spans"
            if where.profile_type == CPU
            else f"no spans with {where.profile_type} samples"
        )
        return 0
    rows = [[s.span_id, s.span_name or "-", str(s.sample_count), iso(s.last_seen)] for s in stats]
    print(table(["SPAN_ID", "SPAN_NAME", "SAMPLES", "LAST_SEEN"], rows, right={2}))
    return 0


COMMANDS = (
    Command("spans", "span ids seen, newest first", _spans_arguments, _spans),
    Command("top", "functions with most samples (CPU or wall) in a span", _top_arguments, _top),
)
