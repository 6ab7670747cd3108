"""The web UI and JSON API per profile type: ``?type=`` on every address, a 400 for a type it
does not know, the span and endpoint pages' tabs with each type's total."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, ProfileStore
from span_profiles.receiver.web.app import create_app
from tests.support.known_shares import (
    AWAIT_SITE,
    A,
    B,
    C,
    D,
    W,
    fill,
    fill_wall,
    sample_count,
    wall_sample_count,
    wall_seconds,
)
from tests.support.receiver import UIClient

SPAN_ADDRESSES = [
    "/api/overview",
    "/api/span-names",
    "/api/spans",
    f"/api/spans/{A}",
    f"/api/flame?span_id={A}",
    "/api/endpoint?span_name=GET%20/a",
    f"/api/diff?span_id={A}",
    f"/api/export/folded?span_id={A}",
]
PAGES = ["/", f"/spans/{A}", "/endpoint?span_name=GET%20/a", f"/diff?span_id={A}"]


@pytest.fixture
def client(db_path: Path) -> Iterator[UIClient]:
    """The app over the known-shares store with its wall samples."""
    fill_wall(fill(db_path))
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        yield UIClient(create_app(store, reader=reader))


def _join(address: str, param: str) -> str:
    return address + ("&" if "?" in address else "?") + param


@pytest.mark.parametrize("address", SPAN_ADDRESSES)
def test_every_document_takes_the_type(client: UIClient, address: str) -> None:
    """``?type=wall`` answers the wall document (the selection says so); the CPU one without it."""
    wall = client.get(_join(address, "type=wall&since=all"))
    cpu = client.get(_join(address, "since=all"))
    assert wall.status_code == cpu.status_code == 200, wall.text
    if address.startswith("/api/export/"):
        assert AWAIT_SITE in wall.text
        assert AWAIT_SITE not in cpu.text
        assert wall.headers["content-disposition"].endswith(f'"{A}.wall.folded"')
        return
    doc = wall.json()
    if "selection" in doc:  # flame, span, endpoint
        assert doc["selection"]["profile_type"] == "wall"
        assert AWAIT_SITE in wall.text
        assert AWAIT_SITE not in cpu.text
    elif "span" in doc:  # diff
        assert doc["span"]["profile_type"] == doc["baseline"]["profile_type"] == "wall"
        assert doc["span_samples"] == wall_sample_count(A)
    elif "window" in doc:  # overview
        assert doc["window"]["profile_type"] == "wall"
        assert [e["span_name"] for e in doc["endpoints"]] == ["GET /a", "GET /wait"]
    else:  # span-names, spans: rows of wall samples, their CPU beside
        (rows,) = doc.values()
        assert [row["samples"] for row in rows][:1] == [
            wall_sample_count(A) + wall_sample_count(B) + wall_sample_count(C)
            if "span_names" in doc
            else wall_sample_count(A)
        ]
        assert all("wall_seconds" in row and "cpu_seconds" in row for row in rows)


@pytest.mark.parametrize("address", SPAN_ADDRESSES + PAGES)
def test_an_unknown_type_is_a_clear_400(client: UIClient, address: str) -> None:
    """Every address refuses a type it does not know, naming the ones it does."""
    response = client.get(_join(address, "type=memory"))
    assert response.status_code == 400
    message = "unknown profile type 'memory': use one of cpu, wall"
    if address.startswith("/api/"):
        assert response.json() == {"error": f"type: {message}"}
    else:
        assert message.replace("'", "&#39;") in response.text


def test_the_span_page_has_a_tab_per_type_with_its_total(client: UIClient) -> None:
    """Both tabs with their totals; the asked type's panel shown, the other hidden; each panel's
    exports and diff link carry its type."""
    page = client.get(f"/spans/{A}?type=wall").text
    tabs = dict(re.findall(r'id="tab-(\w+)".*?<span class="tab-total">([^<]*)</span>', page))
    assert tabs == {
        "cpu": f"{sample_count(A) / 100:.3f} s",
        "wall": f"{wall_seconds(A):.3f} s",
    }
    assert re.search(r'id="tab-wall"[^>]*aria-selected="true"', page)
    assert re.search(r'id="panel-cpu"[^>]*hidden', page)
    assert not re.search(r'id="panel-wall"[^>]*hidden', page)
    wall = page.split('id="panel-wall"')[1].split("</section>")[0]
    assert f"/api/export/pprof?span_id={A}&amp;type=wall" in wall
    assert "type=wall" in re.search(r'href="(/diff\?[^"]*)"', wall).group(1)  # type: ignore[union-attr]
    assert f"<dd>{wall_sample_count(A)}</dd>" in wall
    assert AWAIT_SITE in wall


def test_a_span_without_one_type_says_so(client: UIClient) -> None:
    """A span with no wall samples has a wall tab that says so, and the reverse for CPU."""
    page = client.get(f"/spans/{D}").text
    assert re.search(r'id="tab-wall".*?<span class="tab-total">no samples</span>', page)
    assert "No wall samples for this span" in page.split('id="panel-wall"')[1]
    page = client.get(f"/spans/{W}").text
    assert "No CPU samples for this span" in page.split('id="panel-cpu"')[1].split("</section>")[0]
    assert "asyncio.locks.Lock.acquire" in page.split('id="panel-wall"')[1]
    assert client.get(f"/api/spans/{W}").status_code == 404
    assert client.get("/spans/0123456789abcdef").status_code == 404


def test_without_a_type_a_page_opens_a_tab_with_samples(client: UIClient) -> None:
    """A span that only waited opens on its wall tab unless CPU is asked for; so does an
    endpoint that only waited."""
    selected = r'id="tab-(\w+)"[^>]*aria-selected="true"'
    assert re.findall(selected, client.get(f"/spans/{W}").text) == ["wall"]
    assert re.findall(selected, client.get(f"/spans/{W}?type=cpu").text) == ["cpu"]
    assert re.findall(selected, client.get(f"/spans/{A}").text) == ["cpu"]
    endpoint = "/endpoint?service=shop&span_name=GET%20/wait"
    assert re.findall(selected, client.get(endpoint).text) == ["wall"]
    assert re.findall(selected, client.get(endpoint + "&type=cpu").text) == ["cpu"]


def test_the_endpoint_page_has_a_tab_per_type(client: UIClient) -> None:
    """The endpoint's tabs: CPU 0.600 s and its wall total; the wall panel lists its spans by
    wall time with their CPU seconds."""
    page = client.get("/endpoint?service=shop&span_name=GET%20/a").text
    totals = dict(re.findall(r'id="tab-(\w+)".*?<span class="tab-total">([^<]*)</span>', page))
    assert totals == {"cpu": "0.600 s", "wall": "1.035 s"}
    wall = page.split('id="panel-wall"')[1].split("</section>")[0]
    assert "Wall per request" in wall
    assert re.search(r"<th[^>]*>CPU s</th>", wall)
    assert re.findall(r'href="/spans/(\w+)\?type=wall"', wall) == [A, B, C]
    assert "type=wall" in re.search(r'href="(/api/export/folded\?[^"]*)"', wall).group(1)  # type: ignore[union-attr]


def test_the_overview_shows_wall_columns_and_ranks_by_type(client: UIClient) -> None:
    """The CPU overview has wall columns (a dash where an endpoint has none); ranked by wall time
    it lists the endpoint that only waited."""
    page = client.get("/").text
    assert re.search(r"<th[^>]*>Wall s</th>", page)
    assert "GET /wait" not in page
    page = client.get("/?type=wall").text
    assert "GET /wait" in page
    assert "Spans with the most wall time" in page
    assert re.search(r'<option value="wall" selected>', page)
