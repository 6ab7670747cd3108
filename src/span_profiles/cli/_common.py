"""What every subcommand of ``span-profiles`` shares: how it registers, its argument types, the
options common to the query commands, and how a database is opened for reading."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from span_profiles.receiver.model import CPU, VIEW_TYPES, check_span_id
from span_profiles.receiver.query.reader import ProfileReader
from span_profiles.receiver.query.selection import Selection, parse_age, parse_time
from span_profiles.receiver.storage.schema import default_db_path

__all__ = [
    "Command",
    "add_db",
    "add_which",
    "add_window",
    "age_arg",
    "bytes_arg",
    "fail",
    "iso",
    "open_reader",
    "port_arg",
    "positive_int",
    "selection",
    "span_id_arg",
    "table",
    "time_arg",
]


@dataclass(frozen=True)
class Command:
    """One subcommand: ``main`` adds a parser named ``name``, lets ``arguments`` fill it, and
    calls ``run`` with the parsed arguments (its return value is the exit status)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- argument types ------------------------------------------------------------------------------


def time_arg(text: str) -> float:
    """``--since``/``--until``: an age (``15m``: that long ago) or an ISO 8601 time."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def age_arg(text: str) -> float | None:
    """``--max-age``: an age in seconds, or ``off`` (also ``0``, ``none``) for no bound."""
    if text.strip() in ("0", "none", "off"):
        return None
    try:
        return parse_age(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age (90, 15m, 2h, 7d) or 'off'"
        ) from None


def positive_int(text: str) -> int:
    """A count greater than zero."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def bytes_arg(text: str) -> int | None:
    """A size in bytes, or ``off`` (also ``0``, ``none``) for no bound."""
    if text.strip() in ("0", "none", "off"):
        return None
    return positive_int(text)


def port_arg(text: str) -> int:
    """A TCP port, 0 for one the system picks."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks one)")
    return value


def span_id_arg(text: str) -> str:
    """A span id: 16 lowercase hex characters."""
    if not check_span_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not 16 lowercase hex characters")
    return text


# -- common options ------------------------------------------------------------------------------


def add_db(parser: argparse.ArgumentParser) -> None:
    """``--db PATH``."""
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"SQLite database (default: {default_db_path()})",
    )


def add_window(parser: argparse.ArgumentParser) -> None:
    """``--service``, ``--since``, ``--until``, ``--type`` (and ``--db``)."""
    add_db(parser)
    parser.add_argument("--service", help="only profiles of this service_name")
    parser.add_argument(
        "--since", type=time_arg, metavar="T", help="received at or after T (age like 15m, or ISO)"
    )
    parser.add_argument(
        "--until", type=time_arg, metavar="T", help="received at or before T (age like 15m, or ISO)"
    )
    parser.add_argument(
        "--type",
        dest="profile_type",
        choices=VIEW_TYPES,
        default=CPU,
        help=f"profile type: {' or '.join(VIEW_TYPES)} (default {CPU}); wall is wall-clock time",
    )


def add_which(parser: argparse.ArgumentParser) -> None:
    """``--span-id ID | --span-name NAME``, one of them required."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--span-id", type=span_id_arg, metavar="ID", help="samples with this span_id"
    )
    which.add_argument("--span-name", metavar="NAME", help="samples with this span_name")


def selection(args: argparse.Namespace) -> Selection:
    """The :class:`Selection` of ``--service``, ``--since``, ``--until``, ``--type`` and, where
    the command has them, ``--span-id`` / ``--span-name``."""
    span_id = getattr(args, "span_id", None)
    span_name = getattr(args, "span_name", None)
    return Selection(
        service=args.service,
        since=args.since,
        until=args.until,
        span_ids=(span_id,) if span_id else (),
        span_names=(span_name,) if span_name else (),
        profile_type=args.profile_type,
    )


# -- output --------------------------------------------------------------------------------------


def fail(message: str) -> int:
    """Print ``span-profiles: message`` to standard error; return exit status 1."""
    print(f"span-profiles: {message}", file=sys.stderr)
    return 1


def open_reader(args: argparse.Namespace) -> ProfileReader | None:
    """A reader of ``--db`` (or the default database); ``None`` after printing why not."""
    path: Path = args.db if args.db is not None else default_db_path()
    if not path.exists():
        fail(f"no database at {path} (run 'span-profiles serve' or pass --db)")
        return None
    try:
        return ProfileReader(path)
    except sqlite3.Error as exc:
        fail(f"cannot read the database at {path}: {exc}")
        return None


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A plain-text table, the columns in ``right`` aligned right."""
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def iso(timestamp: float) -> str:
    """Local time with its offset, to the second."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
