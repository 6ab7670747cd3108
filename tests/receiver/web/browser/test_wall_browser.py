"""The wall-clock view in real headless Chromium: the CPU and wall tabs with their totals, the
wall flame graph's await site, a wall diff, the overview's wall columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.known_shares import (
    AWAIT_SITE,
    A,
    B,
    C,
    D,
    W,
    fill_wall,
    sample_count,
    wall_sample_count,
    wall_seconds,
)

pytestmark = pytest.mark.e2e


def frames(page: Any, panel: str) -> list[str]:
    """The function names of the frames drawn in one tab's panel."""
    names: list[str] = page.eval_on_selector_all(
        f"#panel-{panel} .flame-chart svg g.frame", "gs => gs.map(g => g.getAttribute('name'))"
    )
    return names


def frame(panel: str, name: str) -> str:
    """The selector of the frame named ``name`` in one tab's panel."""
    return f'#panel-{panel} .flame-chart svg g.frame[name="{name}"]'


def test_span_page_switches_between_the_cpu_and_wall_tabs(
    page: Any, served_wall: tuple[str, Path]
) -> None:
    """Both tabs show their totals; the wall tab draws the wall flame graph with the await site
    the span waited on, its tooltip in wall seconds; the address keeps the tab; arrows switch."""
    url, _ = served_wall
    page.goto(f"{url}/spans/{A}")
    page.wait_for_selector(frame("cpu", "burn_a"))
    assert page.inner_text("#tab-cpu") == f"CPU {sample_count(A) / 100:.3f} s"
    assert page.inner_text("#tab-wall") == f"Wall {wall_seconds(A):.3f} s"
    assert page.get_attribute("#tab-cpu", "aria-selected") == "true"
    assert not page.is_visible("#panel-wall")
    assert frames(page, "wall") == []  # drawn when first shown
    assert AWAIT_SITE not in frames(page, "cpu")

    page.click("#tab-wall")
    page.wait_for_selector(frame("wall", AWAIT_SITE))
    assert page.get_attribute("#tab-wall", "aria-selected") == "true"
    assert not page.is_visible("#panel-cpu")
    assert {"main", "handler", "fetch_user", "asyncio.tasks.sleep"} <= set(frames(page, "wall"))
    assert page.inner_text("#panel-wall .type-total") == f"{wall_seconds(A):.3f} s"
    assert page.url.endswith(f"/spans/{A}?type=wall")
    page.hover(f"{frame('wall', AWAIT_SITE)} rect")
    # One tooltip element per drawn chart: the wall chart's shows the frame.
    tip = page.locator(".d3-flame-graph-tip", has_text=AWAIT_SITE)
    tip.wait_for(state="visible")
    assert "30 samples" in tip.inner_text()
    assert "0.300 wall s" in tip.inner_text()
    assert (
        page.locator("#panel-wall table.functions tbody tr").first.inner_text().endswith(AWAIT_SITE)
    )

    page.reload()
    page.wait_for_selector(frame("wall", AWAIT_SITE))
    assert page.get_attribute("#tab-wall", "aria-selected") == "true"
    page.focus("#tab-wall")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#panel-cpu", state="visible")
    assert page.get_attribute("#tab-cpu", "aria-selected") == "true"
    assert page.url.endswith("?type=cpu")


def test_a_span_without_one_type_says_so_plainly(page: Any, served_wall: tuple[str, Path]) -> None:
    """No wall samples: the wall tab says "no samples" and its panel why; no CPU samples (a span
    that only waited): the CPU panel says so and the wall tab has its graph."""
    url, _ = served_wall
    page.goto(f"{url}/spans/{D}")
    assert page.inner_text("#tab-wall") == "Wall no samples"
    page.click("#tab-wall")
    assert "No wall samples for this span" in page.inner_text("#panel-wall")
    page.goto(f"{url}/spans/{W}")  # a span that only waited opens on its wall tab
    page.wait_for_selector(frame("wall", "asyncio.locks.Lock.acquire"))
    assert page.inner_text("#tab-wall") == "Wall 0.250 s"
    assert page.inner_text("#tab-cpu") == "CPU no samples"
    page.click("#tab-cpu")
    assert "No CPU samples for this span" in page.inner_text("#panel-cpu")


def test_endpoint_page_wall_tab(page: Any, served_wall: tuple[str, Path]) -> None:
    """The endpoint's wall tab: its total, the aggregate wall flame graph, its spans by wall time
    with their CPU seconds beside."""
    url, _ = served_wall
    page.goto(f"{url}/endpoint?service=shop&span_name=GET%20/a")
    assert page.inner_text("#tab-cpu") == "CPU 0.600 s"
    assert page.inner_text("#tab-wall") == "Wall 1.035 s"
    page.click("#tab-wall")
    page.wait_for_selector(frame("wall", AWAIT_SITE))
    rows = page.locator("#spans-wall tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == [A, B, C]
    header = page.inner_text("#spans-wall thead")
    assert "Wall s" in header
    assert "CPU s" in header
    page.click(f"#spans-wall a[href='/spans/{B}?type=wall']")
    page.wait_for_url(f"**/spans/{B}?type=wall")
    page.wait_for_selector(frame("wall", AWAIT_SITE))


def test_wall_diff_from_the_wall_tab(page: Any, served_wall: tuple[str, Path]) -> None:
    """The wall tab's "Compare with baseline" opens a wall diff: the pool wait is a larger share
    of A's wall time than of the other spans' (red), its CPU work a smaller one (blue)."""
    url, _ = served_wall
    page.goto(f"{url}/spans/{A}?type=wall")
    page.click("#compare-wall")
    page.wait_for_url("**/diff?**type=wall**")
    page.wait_for_selector(f'.flame-chart svg g.frame[name="{AWAIT_SITE}"]')
    red = page.eval_on_selector(
        f'.flame-chart svg g.frame[name="{AWAIT_SITE}"] rect', "r => r.getAttribute('fill')"
    )
    blue = page.eval_on_selector(
        '.flame-chart svg g.frame[name="burn_a"] rect', "r => r.getAttribute('fill')"
    )
    assert red.startswith("rgb(255,"), red
    assert blue.endswith(",255)"), blue
    summary = page.inner_text("dl.summary")
    assert "Wall" in summary
    assert f"{wall_sample_count(A)} samples" in summary
    assert f"{wall_sample_count(B) + wall_sample_count(C)} samples" in summary


def test_overview_wall_columns_and_ranking(page: Any, served_wall: tuple[str, Path]) -> None:
    """The CPU overview shows each endpoint's wall seconds (a dash without any); ranked by wall
    time it lists the endpoint that only waited, and its spans by wall time."""
    url, _ = served_wall
    page.goto(url + "/")
    header = [t.strip() for t in page.locator("#endpoints thead th").all_inner_texts()]
    assert "Wall s" in header
    cells = {
        row.locator("td").nth(1).inner_text(): row.locator("td").nth(header.index("Wall s"))
        for row in page.locator("#endpoints tbody tr").all()
        if row.locator("td").first.inner_text() == "shop"
    }
    assert cells["GET /a"].inner_text() == "1.035"
    assert cells["GET /b"].inner_text() == "\u2013"
    page.select_option("select[name=type]", "wall")
    page.click("form.toolbar button[type=submit]")
    page.wait_for_url("**type=wall**")
    assert "GET /wait" in page.inner_text("#endpoints")
    assert page.locator("#top-spans tbody tr").first.locator("td").first.inner_text() == A


def test_overview_adds_wall_columns_when_wall_data_arrives(
    page: Any, served: tuple[str, Path]
) -> None:
    """A store of CPU samples only has no wall columns; when wall samples arrive the open
    overview shows them without a manual reload."""
    url, db_path = served
    page.goto(url + "/")
    assert "Wall s" not in page.inner_text("#endpoints thead")
    fill_wall(db_path)
    page.wait_for_function(
        "() => document.querySelector('#endpoints thead').textContent.includes('Wall s')",
        timeout=20_000,
    )
