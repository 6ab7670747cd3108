"""Real headless Chromium (Debian's ``/usr/bin/chromium``) driven through Playwright.

Without the browser or Playwright these tests skip on a developer machine but FAIL when ``CI``
is ``true``: ``scripts/test.sh`` runs ``scripts/install-browser.sh`` first, so a missing browser
in CI is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from span_profiles.receiver import start_receiver_in_thread
from tests.support.known_shares import fill, fill_wall

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the browser tests (see scripts/install-browser.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module.

    Not per session: Playwright's sync API keeps its own event loop on the main thread while it
    is open, and later tests that run an event loop there (``anyio.run``) would fail.
    """
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (run scripts/install-browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (it is in noxfile.py's test dependencies)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in its own context, failing the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real receiver (uvicorn, ingest + UI) on 127.0.0.1 over the known-shares store."""
    db_path = fill(tmp_path / "profiles.db")
    receiver = start_receiver_in_thread(db_path=db_path)
    try:
        yield receiver.url, db_path
    finally:
        receiver.stop()


@pytest.fixture
def served_wall(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real receiver over the known-shares store with the wall samples of some of its spans."""
    db_path = fill_wall(fill(tmp_path / "profiles.db"))
    receiver = start_receiver_in_thread(db_path=db_path)
    try:
        yield receiver.url, db_path
    finally:
        receiver.stop()
