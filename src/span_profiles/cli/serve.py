"""``span-profiles serve``: run the receiver, its web UI and JSON API, until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sqlite3
import sys

from span_profiles.cli._common import (
    Command,
    add_db,
    age_arg,
    bytes_arg,
    fail,
    port_arg,
    positive_int,
)
from span_profiles.receiver.ingest.limits import Limits
from span_profiles.receiver.storage.retention import Retention

__all__ = ["COMMANDS"]


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_db(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback; the receiver has NO authentication",
    )
    parser.add_argument("--port", type=port_arg, default=4040, help="port (default: 4040)")
    parser.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=Limits().max_body_bytes,
        metavar="N",
        help="largest accepted request body (default: 16 MiB)",
    )
    defaults = Retention()
    parser.add_argument(
        "--max-age",
        type=age_arg,
        default=defaults.max_age,
        metavar="T",
        help="delete profiles older than T (age like 7d; 'off' keeps them; default: 7d)",
    )
    parser.add_argument(
        "--max-db-bytes",
        type=bytes_arg,
        default=defaults.max_bytes,
        metavar="N",
        help="delete the oldest profiles when the database uses more (default: 1 GiB; 'off')",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log refused requests only")


def _run(args: argparse.Namespace) -> int:
    # Imported here: the query commands must work without the receiver extra installed.
    try:
        from span_profiles.receiver.web.server import Receiver
    except ImportError as exc:
        return fail(
            f"the receiver needs protobuf, starlette, uvicorn and jinja2 ({exc}); "
            "install them with: pip install 'span-profiles[receiver]'"
        )
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
        )
    except ValueError as exc:
        fail(str(exc))
        return 2
    try:
        receiver.bind()
    except sqlite3.Error as exc:
        return fail(
            f"cannot open the database at {receiver.db_path} for writing: {exc}"
            " (top and spans can still read it; pass --db to store elsewhere)"
        )
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc}")
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


COMMANDS = (Command("serve", "run the receiver and its web UI", _arguments, _run),)
