"""The ``span-profiles`` command, above both the library and the receiver.

Usage::

    span-profiles serve [--host 127.0.0.1 [--allow-remote]] [--port 4040] [--db PATH]
                        [--max-body-bytes N] [--max-age T] [--max-db-bytes N] [-q]
    span-profiles spans [--service S] [--since T] [--until T] [--type cpu|wall] [--limit N]
                        [--json] [--db PATH]
    span-profiles top (--span-id ID | --span-name NAME) [--service S] [--since T] [--until T]
                      [--type cpu|wall] [--limit N] [--json] [--db PATH]
    span-profiles flame | diff | export ...      (see span_profiles.cli.views)
    span-profiles doctor [--json] [--server-address URL] [--application-name N] [--db PATH]

``T`` is either an age (``90``, ``90s``, ``15m``, ``2h``, ``1d``: that long ago) or an ISO 8601
time (``2026-05-01T12:00:00``, local time unless it carries an offset). ``--type`` picks the profile
type (``cpu``, the default, or ``wall``: wall-clock time). The query commands open the
database read-only, so they work on read-only storage and never wait for the receiver.

Every subcommand is a :class:`~span_profiles.cli._common.Command` in its module's ``COMMANDS``,
registered the same way by :func:`main`: a new one is one more entry in :data:`COMMANDS`.
``python -m span_profiles.cli`` runs the same command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from span_profiles.cli import doctor, query, serve, views
from span_profiles.cli._common import Command

__all__ = ["COMMANDS", "main"]

COMMANDS: tuple[Command, ...] = (
    *serve.COMMANDS,
    *query.COMMANDS,
    *views.COMMANDS,
    *doctor.COMMANDS,
)
"""Every subcommand, in the order ``span-profiles --help`` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="span-profiles",
        description="Local Pyroscope-compatible receiver for per-span CPU and wall-clock profiles.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``span-profiles`` command line; returns the exit status.

    Invalid arguments exit with status 2 through :mod:`argparse` (``SystemExit``).
    """
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status
