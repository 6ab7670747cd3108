"""The private PostgreSQL helper (tests/support/postgres.py) says what is missing instead of failing late."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, PostgresUnavailable, find_bindir, run_as


def _fake_bindir(root: Path, version: str) -> Path:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (bindir / tool).write_text("")
    return bindir


def test_the_newest_debian_server_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian installs each major version under its own directory: the highest one wins."""
    monkeypatch.delenv("SPAN_PROFILES_PG_BINDIR", raising=False)
    _fake_bindir(tmp_path, "9")
    newest = _fake_bindir(tmp_path, "15")
    assert find_bindir(tmp_path) == newest


def test_an_explicit_bindir_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$SPAN_PROFILES_PG_BINDIR`` beats the Debian directories."""
    _fake_bindir(tmp_path / "debian", "15")
    mine = _fake_bindir(tmp_path / "mine", "16")
    monkeypatch.setenv("SPAN_PROFILES_PG_BINDIR", str(mine))
    assert find_bindir(tmp_path / "debian") == mine


def test_missing_binaries_name_the_install_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server anywhere: the error says how to install one (the e2e test fails with it)."""
    monkeypatch.setenv("SPAN_PROFILES_PG_BINDIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match=r"scripts/install-postgres\.sh"):
        find_bindir(tmp_path / "no-debian")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="as root only")
def test_as_root_a_missing_server_user_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """initdb refuses root; the user to run it as must exist, and the error says which."""
    monkeypatch.setenv("SPAN_PROFILES_PG_USER", "no-such-user-span-profiles")
    with pytest.raises(PostgresUnavailable, match="no-such-user-span-profiles"):
        run_as()


def test_urls() -> None:
    """The DSN for libpq/asyncpg and the SQLAlchemy URL point at the same server."""
    server = PostgresServer("127.0.0.1", 5999, "postgres", "app", Path("/tmp/x"))
    assert server.dsn == "postgresql://postgres@127.0.0.1:5999/app"
    assert server.sqlalchemy_url() == "postgresql+asyncpg://postgres@127.0.0.1:5999/app"
