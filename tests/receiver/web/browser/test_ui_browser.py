"""The web UI and the ``flame -o`` file in real headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from span_profiles.cli import main
from span_profiles.receiver import ProfileStore
from tests.support.known_shares import A, C, sample_count
from tests.support.receiver import sample, series

pytestmark = pytest.mark.e2e

FRAME = ".flame-chart svg g.frame"


def frame_names(page: Any) -> list[str]:
    """The function names of the drawn frames (the ``name`` attribute d3-flame-graph sets)."""
    names: list[str] = page.eval_on_selector_all(FRAME, "gs => gs.map(g => g.getAttribute('name'))")
    return names


def frame_fill(page: Any, name: str) -> str:
    """The fill colour of the first frame named ``name``."""
    fill: str = page.eval_on_selector(f'{FRAME}[name="{name}"] rect', "r => r.getAttribute('fill')")
    return fill


def test_overview_click_through_to_span_flame_graph(page: Any, served: tuple[str, Path]) -> None:
    """Overview -> the top span -> its functions are frames, with their names as text."""
    url, _ = served
    page.goto(url + "/")
    top = page.locator("#top-spans tbody tr").first
    assert top.locator("td").first.inner_text() == C
    top.locator("a").first.click()
    page.wait_for_url(f"**/spans/{C}")
    page.wait_for_selector(f'{FRAME}[name="burn_a"]')
    assert {"all", "main", "handler", "burn_a", "slow_io"} <= set(frame_names(page))
    # The frame's label is text in the DOM (after the library's short transition).
    page.wait_for_function(
        "() => [...document.querySelectorAll('.d3-flame-graph-label')]"
        ".some(d => d.textContent === 'burn_a')"
    )
    assert "samples" in page.locator("#panel-cpu dl.summary").inner_text().lower()
    assert page.locator("table.functions tbody tr").first.inner_text().endswith("burn_a")
    # Hover: a tooltip with samples, share and CPU seconds.
    page.hover(f'{FRAME}[name="burn_a"] rect')
    tip = page.locator(".d3-flame-graph-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert "27 samples" in text
    assert "CPU s" in text
    assert "%" in text


def test_zoom_and_reset(page: Any, served: tuple[str, Path]) -> None:
    """Clicking a frame zooms to it (siblings go); Reset brings them back."""
    url, _ = served
    page.goto(f"{url}/spans/{A}")
    page.wait_for_selector(f'{FRAME}[name="slow_io"]')
    page.click(f'{FRAME}[name="burn_a"]')
    page.wait_for_function(
        "() => !document.querySelector('.flame-chart svg g.frame[name=\"slow_io\"]')"
    )
    page.click(".flame-reset")
    page.wait_for_selector(f'{FRAME}[name="slow_io"]')


def test_search_highlights_matching_frames(page: Any, served: tuple[str, Path]) -> None:
    """Typing in the search box highlights matches and reports their share."""
    url, _ = served
    page.goto(f"{url}/spans/{A}")
    page.wait_for_selector(f'{FRAME}[name="burn_a"]')
    page.fill(".flame-search", "burn")
    page.wait_for_function(
        "() => document.querySelector('.flame-details').textContent.includes('match')"
    )
    assert frame_fill(page, "burn_a").lower() == "#e600e6"
    assert frame_fill(page, "slow_io").lower() != "#e600e6"
    assert "60.00%" in page.locator(".flame-details").inner_text()


def test_compare_with_baseline_opens_the_diff(page: Any, served: tuple[str, Path]) -> None:
    """The span page's "Compare with baseline" opens a diff: red for more, blue for less."""
    url, _ = served
    page.goto(f"{url}/spans/{A}")
    page.click("#compare")
    page.wait_for_url("**/diff?**")
    page.wait_for_selector(f'{FRAME}[name="slow_io"]')
    red = frame_fill(page, "slow_io")
    blue = frame_fill(page, "burn_a")
    assert red.startswith("rgb(255,"), red
    assert blue.endswith(",255)"), blue
    assert "50 samples" in page.locator("dl.summary").inner_text()
    assert page.locator("table.deltas tbody tr").count() >= 3


def test_span_id_lookup_box(page: Any, served: tuple[str, Path]) -> None:
    """A span id pasted into the look-up box opens its page."""
    url, _ = served
    page.goto(url + "/")
    page.fill("header input[name=span_id]", A)
    page.press("header input[name=span_id]", "Enter")
    page.wait_for_url(f"**/spans/{A}")
    assert A in page.locator("h1").inner_text()


def test_flame_file_works_offline(page: Any, served: tuple[str, Path], tmp_path: Path) -> None:
    """`span-profiles flame -o FILE.html` opens from file:// with every request blocked."""
    _, db_path = served
    out = tmp_path / "flame.html"
    assert main(["flame", "--span-id", A, "-o", str(out), "--db", str(db_path)]) == 0
    blocked: list[str] = []

    def block(route: Any) -> None:
        if not route.request.url.startswith("file://"):
            blocked.append(route.request.url)
        route.abort() if not route.request.url.startswith("file://") else route.continue_()

    page.context.set_offline(True)
    page.route("**/*", block)
    page.goto(out.as_uri())
    page.wait_for_selector(f'{FRAME}[name="burn_a"]')
    assert set(frame_names(page)) >= {"main", "handler", "burn_a", "slow_io"}
    assert blocked == []
    page.fill(".flame-search", "slow")
    page.wait_for_function(
        "() => document.querySelector('.flame-details').textContent.includes('match')"
    )
    page.click(f'{FRAME}[name="handler"]')
    page.wait_for_function(
        "() => !document.querySelector('.flame-chart svg g.frame[name=\"slow_io\"]')"
    )
    page.click(".flame-reset")
    page.wait_for_selector(f'{FRAME}[name="slow_io"]')
    page.hover(f'{FRAME}[name="main"] rect')
    assert f"{sample_count(A)} samples" in page.locator(".d3-flame-graph-tip").inner_text()


def test_overview_refreshes_while_data_arrives(page: Any, served: tuple[str, Path]) -> None:
    """A span that arrives after the page loaded shows up without a reload."""
    url, db_path = served
    page.goto(url + "/")
    page.wait_for_selector(f"#top-spans a[href='/spans/{C}']")
    new = "0123456789abcdef"
    with ProfileStore(db_path) as store:
        labels = [("span_id", new), ("span_name", "GET /new")]
        store.add([series([sample(["hot", "main"], 500, labels)], service="shop")])
    page.wait_for_selector(f"#top-spans a[href='/spans/{new}']", timeout=20_000)
    assert "GET /new" in page.locator("#endpoints").inner_text()
