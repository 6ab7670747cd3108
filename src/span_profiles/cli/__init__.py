"""The ``span-profiles`` command: run the local receiver and query what it stored.

Usage::

    span-profiles serve [--host 127.0.0.1 [--allow-remote]] [--port 4040] [--db PATH]
                        [--max-body-bytes N] [--max-age T] [--max-db-bytes N] [-q]
    span-profiles top (--span-id ID | --span-name NAME) [--service S] [--since T] [--until T]
                      [--limit N] [--json] [--db PATH]
    span-profiles spans [--service S] [--since T] [--until T] [--limit N] [--json] [--db PATH]

``T`` is either an age (``90``, ``90s``, ``15m``, ``2h``, ``1d``: that long ago) or an ISO 8601
time (``2026-05-01T12:00:00``, local time unless it carries an offset). ``top`` and ``spans`` open the
database read-only, so they work on read-only storage and never wait for the receiver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from span_profiles import _doctor
from span_profiles.receiver.model import check_span_id
from span_profiles.receiver.storage.writer import (
    Filter,
    FunctionStat,
    ProfileStore,
    Retention,
    SpanStat,
    default_db_path,
)

__all__ = ["main"]

_AGE_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd]?)$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _age_arg(text: str) -> float | None:
    if text.strip() in ("0", "none", "off"):
        return None
    match = _AGE_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age (90, 15m, 2h, 7d) or 'off'")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def _bytes_arg(text: str) -> int | None:
    if text.strip() in ("0", "none", "off"):
        return None
    return _positive_int(text)


def _time_arg(text: str) -> float:
    match = _AGE_RE.fullmatch(text.strip())
    if match is not None:
        return time.time() - float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    iso = text.strip()
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (90, 15m, 2h, 1d) nor an ISO 8601 time"
        ) from None


def _span_id_arg(text: str) -> str:
    if not check_span_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not 16 lowercase hex characters")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks one)")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="span-profiles",
        description="Local Pyroscope-compatible receiver for per-span CPU profiles.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"SQLite database (default: {default_db_path()})",
    )
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
    window.add_argument("--json", action="store_true", help="print JSON instead of a table")

    serve = commands.add_parser("serve", parents=[db], help="run the receiver")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback; the receiver has NO authentication",
    )
    serve.add_argument("--port", type=_port_arg, default=4040, help="port (default: 4040)")
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=16 * 1024 * 1024,
        metavar="N",
        help="largest accepted request body (default: 16 MiB)",
    )
    defaults = Retention()
    serve.add_argument(
        "--max-age",
        type=_age_arg,
        default=defaults.max_age,
        metavar="T",
        help="delete profiles older than T (age like 7d; 'off' keeps them; default: 7d)",
    )
    serve.add_argument(
        "--max-db-bytes",
        type=_bytes_arg,
        default=defaults.max_bytes,
        metavar="N",
        help="delete the oldest profiles when the database uses more (default: 1 GiB; 'off')",
    )
    serve.add_argument("-q", "--quiet", action="store_true", help="log refused requests only")

    top = commands.add_parser(
        "top", parents=[db, window], help="functions with most CPU samples in a span"
    )
    which = top.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--span-id", type=_span_id_arg, metavar="ID", help="samples with this span_id"
    )
    which.add_argument("--span-name", metavar="NAME", help="samples with this span_name")
    top.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="rows (default 20)"
    )

    _doctor.register(commands)
    spans = commands.add_parser("spans", parents=[db, window], help="span ids seen, newest first")
    spans.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="rows (default 50)"
    )
    # flame, diff and export live in their own module (imported here: it imports this one).
    from span_profiles.cli import views as _cli_views

    _cli_views.register(commands, [db])
    return parser


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _open_store(args: argparse.Namespace) -> ProfileStore | None:
    path: Path = args.db if args.db is not None else default_db_path()
    if not path.exists():
        print(
            f"span-profiles: no database at {path} (run 'span-profiles serve' or pass --db)",
            file=sys.stderr,
        )
        return None
    try:
        return ProfileStore(path, read_only=True)
    except sqlite3.Error as exc:
        print(f"span-profiles: cannot read the database at {path}: {exc}", file=sys.stderr)
        return None


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(
        service=args.service,
        since=args.since,
        until=args.until,
        span_id=getattr(args, "span_id", None),
        span_name=getattr(args, "span_name", None),
    )


def _top(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if store is None:
        return 1
    where = _filter(args)
    with store:
        stats: list[FunctionStat] = store.top(where, limit=args.limit)
        total = store.total_count(where)
    if args.json:
        document = {
            "filter": {
                "span_id": where.span_id,
                "span_name": where.span_name,
                "service": where.service,
                "since": where.since,
                "until": where.until,
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
    if not total:
        print(f"no samples for {what}")
        return 0
    print(f"{total} samples for {what}")
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
    print(_table(["SELF", "SELF%", "TOTAL", "TOTAL%", "FUNCTION"], rows, right={0, 1, 2, 3}))
    return 0


def _spans(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if store is None:
        return 1
    with store:
        stats: list[SpanStat] = store.spans(_filter(args), limit=args.limit)
    if args.json:
        document = {
            "spans": [
                {
                    "span_id": s.span_id,
                    "span_name": s.span_name,
                    "sample_count": s.sample_count,
                    "last_seen": s.last_seen,
                }
                for s in stats
            ]
        }
        print(json.dumps(document, indent=2))
        return 0
    if not stats:
        print("no spans")
        return 0
    rows = [[s.span_id, s.span_name or "-", str(s.sample_count), _iso(s.last_seen)] for s in stats]
    print(_table(["SPAN_ID", "SPAN_NAME", "SAMPLES", "LAST_SEEN"], rows, right={2}))
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the query commands must work without the receiver extra installed.
    try:
        from span_profiles.receiver.web import ui
        from span_profiles.receiver.web.server import Receiver
    except ImportError as exc:
        print(
            f"span-profiles: the receiver needs protobuf, starlette and uvicorn ({exc}); "
            "install them with: pip install 'span-profiles[receiver]'",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        receiver = Receiver(
            args.host,
            args.port,
            args.db,
            max_body_bytes=args.max_body_bytes,
            retention=Retention(max_age=args.max_age, max_bytes=args.max_db_bytes),
            allow_remote=args.allow_remote,
            access_log=not args.quiet,
            extra_routes=ui.routes(),
        )
    except ValueError as exc:
        print(f"span-profiles: {exc}", file=sys.stderr)
        return 2
    try:
        receiver.bind()
    except sqlite3.Error as exc:
        print(
            f"span-profiles: cannot open the database at {receiver.db_path} for writing: {exc}"
            " (top and spans can still read it; pass --db to store elsewhere)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"span-profiles: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    if args.allow_remote:
        print(
            "span-profiles: serving without authentication to anyone who can reach it",
            file=sys.stderr,
        )
    print(f"span-profiles receiver on {receiver.url}, storing in {receiver.db_path}", flush=True)
    print(f"web UI on {receiver.url}/", flush=True)
    # A process started in the background inherits SIGINT ignored. uvicorn handles SIGINT and
    # SIGTERM while serving and raises them again afterwards: both end here, with status 0.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``span-profiles`` command line; returns the exit status.

    Invalid arguments exit with status 2 through :mod:`argparse` (``SystemExit``).
    """
    args = _build_parser().parse_args(argv)
    handlers = {"serve": _serve, "top": _top, "spans": _spans, "doctor": _doctor.run}
    handler = getattr(args, "views_handler", None) or handlers[args.command]
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
