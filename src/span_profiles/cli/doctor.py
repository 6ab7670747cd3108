"""``span-profiles doctor``: check a setup before deploying it, with a fix for each problem.

The library's checks (:mod:`span_profiles._doctor`: agent, Python, CPUs, placement, server,
names) and, when it exists, the local receiver's database and its retention. The exit status is 1
when any check found a problem, 2 for invalid settings. ``--json`` prints the checks as a JSON
list for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path

from span_profiles import _doctor
from span_profiles._doctor import Check
from span_profiles._settings import Settings, SettingsError
from span_profiles.cli._common import Command
from span_profiles.receiver.storage.retention import read_status
from span_profiles.receiver.storage.schema import default_db_path

__all__ = ["COMMANDS", "check_receiver_db"]


def check_receiver_db(path: Path | None) -> Check | None:
    """Retention of the local receiver's database (the defaults ``serve`` applies), if one exists."""
    db = path or default_db_path()
    if not db.exists():
        return None
    try:
        status = read_status(db)
    except (sqlite3.Error, OSError) as exc:
        return Check("receiver-db", "problem", f"{db} cannot be read: {exc!r}", "check the file")
    held = f"{status.used_bytes / 2**20:.1f} MiB in use by {status.profiles} profiles"
    if status.max_age is None and status.max_bytes is None:
        return Check(
            "receiver-db",
            "warning",
            f"{db}: no retention limit, {held}",
            "serve with --max-age and --max-db-bytes",
        )
    limits = []
    if status.max_age is not None:
        limits.append(f"max age {status.max_age / 86400:g} d")
    if status.max_bytes is not None:
        limits.append(f"max size {status.max_bytes / 2**30:g} GiB")
    return Check("receiver-db", "ok", f"{db}: retention {', '.join(limits)}; {held}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--server-address", help="default: PYROSCOPE_SERVER_ADDRESS")
    parser.add_argument("--application-name", help="default: PYROSCOPE_APPLICATION_NAME")
    parser.add_argument(
        "--pin-cpu", choices=("auto", "on", "off"), help="default: SPAN_PROFILES_PIN_CPU"
    )
    parser.add_argument(
        "--sampler",
        choices=("auto", "pyroscope", "builtin"),
        help="default: SPAN_PROFILES_SAMPLER",
    )
    parser.add_argument("--db", type=Path, help="the local receiver's database (default path)")


def _run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.resolve(
            {
                "server_address": args.server_address,
                "application_name": args.application_name,
                "pin_cpu": args.pin_cpu,
                "sampler": args.sampler,
            }
        )
    except SettingsError as exc:
        print(f"span-profiles doctor: {exc}", file=sys.stderr)
        return 2
    found = _doctor.checks(settings, os.environ)
    receiver = check_receiver_db(args.db)
    if receiver is not None:
        found.append(receiver)
    if args.json:
        print(json.dumps([asdict(check) for check in found], indent=2))
    else:
        for check in found:
            print(f"{check.status:<8} {check.name:<12} {check.detail}")
            if check.fix:
                print(f"{'':<8} {'':<12} fix: {check.fix}")
    return 1 if any(check.status == "problem" for check in found) else 0


COMMANDS = (Command("doctor", "check a setup before deploying it", _arguments, _run),)
