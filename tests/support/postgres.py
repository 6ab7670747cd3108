"""A private PostgreSQL cluster on loopback for tests and benchmarks, removed afterwards.

``with private_cluster() as pg:`` runs Debian's ``initdb`` and ``pg_ctl`` (``postgresql``
package, installed by ``scripts/install-postgres.sh``) in a fresh temporary directory: a trust-auth
cluster listening on 127.0.0.1 at a free port, its unix socket in that directory, durability off
(a throw-away database). On the way out the server is stopped (then killed if it lingers) and the
directory removed, whatever happened.

``initdb`` refuses to run as root: as root, the cluster runs as the ``postgres`` OS user (the
package creates it), or as ``$SPAN_PROFILES_PG_USER``. ``$SPAN_PROFILES_PG_BINDIR`` names the
directory of ``initdb``/``pg_ctl`` when they are neither under ``/usr/lib/postgresql/*/bin`` nor
on ``PATH``. Anything that keeps the cluster from starting raises :class:`PostgresUnavailable`
with what to do about it: callers that need a database fail with that message, never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "private_cluster", "run_as"]

INSTALL_HINT = "install it with scripts/install-postgres.sh (Debian's postgresql package)"

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # A throw-away cluster: nothing needs to survive a crash, and fsyncs would slow every write.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """The private cluster could not be set up; the message says why and what to do."""


@dataclass(frozen=True)
class PostgresServer:
    """A running private cluster."""

    host: str
    port: int
    user: str
    """The superuser (trust authentication: no password)."""
    database: str
    socket_dir: Path

    @property
    def dsn(self) -> str:
        """``postgresql://user@127.0.0.1:port/database`` (libpq and asyncpg)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def sqlalchemy_url(self, driver: str = "asyncpg") -> str:
        """The URL for SQLAlchemy's ``create_async_engine`` / ``create_engine``."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{self.database}"


def find_bindir(debian_root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; raises :class:`PostgresUnavailable`."""
    given = os.environ.get("SPAN_PROFILES_PG_BINDIR")
    candidates = [Path(given)] if given else []
    debian = sorted(
        debian_root.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates += reversed(debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        f"PostgreSQL's initdb/pg_ctl were not found (looked in {[str(c) for c in candidates]} "
        f"and $SPAN_PROFILES_PG_BINDIR): {INSTALL_HINT}"
    )


def run_as() -> str | None:
    """The OS user to run the server as: ``None`` for the current one unless that is root."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("SPAN_PROFILES_PG_USER", "postgres")
    try:
        import pwd

        pwd.getpwnam(user)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, and initdb refuses root; the OS user {user!r} to run PostgreSQL "
            f"as does not exist: {INSTALL_HINT} (it creates 'postgres'), or set "
            "$SPAN_PROFILES_PG_USER to another non-root user"
        ) from None
    return user


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], user: str | None, what: str, timeout: float) -> None:
    try:
        done = subprocess.run(
            argv,
            user=user,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd="/",  # the server's user may not be allowed into the caller's directory
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"{what} failed with status {done.returncode}:\n{done.stdout[-2000:]}"
            f"{done.stderr[-2000:]}"
        )


def _stop(bindir: Path, data: Path, user: str | None) -> None:
    """``pg_ctl stop -m fast``; kill the postmaster if it is still there after that."""
    with contextlib.suppress(PostgresUnavailable):
        _run(
            [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "20"],
            user,
            "pg_ctl stop",
            30,
        )
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises OSError once the process is gone
            time.sleep(0.05)


@contextlib.contextmanager
def private_cluster(
    *, database: str = "app", start_timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster; yield it; stop it and delete its files.

    Raises:
        PostgresUnavailable: binaries or OS user missing, or ``initdb``/``pg_ctl`` failed (the
            message carries their output and the server log's tail).
    """
    bindir = find_bindir()
    user = run_as()
    superuser = user or _current_user()
    top = Path(tempfile.mkdtemp(prefix="span-profiles-pg-"))
    data, log = top / "data", top / "server.log"
    started = False
    try:
        if user is not None:
            shutil.chown(top, user=user)
        _run(
            [
                *(str(bindir / "initdb"), "-D", str(data), "-U", superuser),
                *("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"),
            ],
            user,
            "initdb",
            120,
        )
        for attempt in range(3):
            port = _free_port()
            settings = {**_SETTINGS, "port": str(port), "unix_socket_directories": f"'{top}'"}
            with (data / "postgresql.auto.conf").open("a") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            try:
                _run(
                    [
                        *(str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(log)),
                        *("-w", "-t", str(int(start_timeout))),
                    ],
                    user,
                    "pg_ctl start",
                    start_timeout + 10,
                )
            except PostgresUnavailable as exc:
                # Another process may have taken the port between our probe and the server's bind.
                if attempt == 2 or "already in use" not in _tail(log):
                    raise PostgresUnavailable(f"{exc}\nserver log:\n{_tail(log)}") from None
                continue
            started = True
            break
        psql = bindir / "psql"
        if database != "postgres":
            _run(
                [
                    *(str(psql), "-X", "-q", "-h", "127.0.0.1", "-p", str(port)),
                    *("-U", superuser, "-d", "postgres", "-c", f'CREATE DATABASE "{database}"'),
                ],
                user,
                "CREATE DATABASE",
                30,
            )
        yield PostgresServer("127.0.0.1", port, superuser, database, top)
    finally:
        if started or (data / "postmaster.pid").exists():
            _stop(bindir, data, user)
        shutil.rmtree(top, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no server log)"
