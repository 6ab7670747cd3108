"""The web UI's pages and JSON API (``span_profiles.receiver.web.ui``), in process."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from span_profiles.receiver import ProfileReader, ProfileStore
from span_profiles.receiver.ingest.decode import decode_pprof
from span_profiles.receiver.web.app import create_app
from span_profiles.receiver.web.pages import FLAME_SCRIPTS
from tests.support.known_shares import A, B, C, D, E, fill, sample_count
from tests.support.receiver import UIClient


@pytest.fixture
def client(db_path: Path) -> Iterator[UIClient]:
    """The receiver's app over the known-shares store."""
    fill(db_path)
    with ProfileStore(db_path) as store, ProfileReader(db_path) as reader:
        yield UIClient(create_app(store, reader=reader))


def test_overview_api_per_service_and_span_name(client: UIClient) -> None:
    """Requests, samples, CPU and CPU per request (median, p95) per service and span_name."""
    doc = client.get("/api/overview").json()
    rows = {(e["service"], e["span_name"]): e for e in doc["endpoints"]}
    assert set(rows) == {("shop", "GET /a"), ("shop", "GET /b"), ("elsewhere", "GET /a")}
    a = rows[("shop", "GET /a")]
    assert (a["requests"], a["samples"]) == (3, 10 + 20 + 30)
    assert a["cpu_seconds"] == pytest.approx(0.6)
    assert a["cpu_per_request"] == {"median": pytest.approx(0.2), "p95": pytest.approx(0.3)}
    assert [s["span_id"] for s in doc["top_spans"]] == [C, B, A, E, D]
    assert doc["top_spans"][0]["samples"] == sample_count(C)
    assert client.get("/api/span-names").json()["span_names"] == doc["endpoints"]


def test_overview_window_excludes_old_data(client: UIClient) -> None:
    """A window that ends before the data arrived shows nothing."""
    doc = client.get("/api/overview", params={"since": "1d", "until": "2m"}).json()
    assert doc["endpoints"] == []
    assert doc["top_spans"] == []


def test_overview_page_lists_endpoints_and_top_spans(client: UIClient) -> None:
    """The overview page has both tables, with links to the endpoint and span pages."""
    page = client.get("/")
    assert page.status_code == 200
    assert 'href="/endpoint?service=shop&amp;span_name=GET+%2Fa' in page.text
    assert f'href="/spans/{C}"' in page.text
    assert 'data-api="/api/overview?since=1h"' in page.text


def test_span_api_is_the_span_flame_tree(client: UIClient) -> None:
    """/api/spans/ID: summary, the span's tree only, and its top functions."""
    doc = client.get(f"/api/spans/{A}").json()
    assert doc["span"]["span_name"] == "GET /a"
    assert doc["span"]["service"] == "shop"
    assert doc["span"]["samples"] == doc["total_samples"] == sample_count(A)
    assert doc["span"]["first_seen"] < doc["span"]["last_seen"]
    main = doc["tree"]["children"][0]
    assert main["name"] == "main"
    assert {c["name"] for c in main["children"]} == {"handler", "slow_io"}
    assert doc["functions"][0]["name"] == "burn_a"


def test_span_page_links_diff_and_exports(client: UIClient) -> None:
    """The span page embeds the tree and links the diff and the three exports."""
    page = client.get(f"/spans/{A}")
    assert page.status_code == 200
    assert "Compare with baseline" in page.text
    for fmt in ("pprof", "speedscope", "folded"):
        assert f"/api/export/{fmt}?span_id={A}" in page.text
    assert '"name": "slow_io"' in page.text or '"name":"slow_io"' in page.text


def test_unknown_span_is_404_and_bad_id_is_400(client: UIClient) -> None:
    """An unseen span id answers 404; a malformed one 400, on pages and on the API."""
    assert client.get("/api/spans/0123456789abcdef").status_code == 404
    assert client.get("/spans/0123456789abcdef").status_code == 404
    bad = client.get("/api/spans/NOT-HEX")
    assert bad.status_code == 400
    assert "16 lowercase hex" in bad.json()["error"]


def test_lookup_redirects_to_the_span_page(client: UIClient) -> None:
    """The look-up box accepts a pasted id (spaces, upper case) and redirects; junk gets 400."""
    response = client.get("/lookup", params={"span_id": f"  {A.upper()} "})
    assert response.status_code == 303
    assert response.headers["location"] == f"/spans/{A}"
    assert client.get("/lookup", params={"span_id": "xyz"}).status_code == 400


def test_endpoint_api_and_page(client: UIClient) -> None:
    """The endpoint view aggregates one span name of one service and lists its spans."""
    doc = client.get("/api/endpoint", params={"service": "shop", "span_name": "GET /a"}).json()
    assert doc["total_samples"] == 60
    assert [s["span_id"] for s in doc["spans"]] == [C, B, A]
    assert doc["endpoint"]["requests"] == 3
    page = client.get("/endpoint", params={"service": "shop", "span_name": "GET /a"})
    assert page.status_code == 200
    assert f'href="/spans/{B}"' in page.text


def test_diff_api_default_baseline(client: UIClient) -> None:
    """/api/diff?span_id=A compares with the other GET /a spans of shop."""
    doc = client.get("/api/diff", params={"span_id": A}).json()
    assert (doc["span_samples"], doc["baseline_samples"]) == (10, 50)
    assert doc["baseline"]["span_names"] == ["GET /a"]
    assert doc["baseline"]["service"] == "shop"
    assert doc["baseline"]["exclude_span_ids"] == [A]
    assert doc["comparable"] is True
    top = {f["name"]: f for f in doc["functions"][:3]}
    assert top["slow_io"]["self_delta"] > 0
    assert top["burn_a"]["self_delta"] < 0
    assert doc["tree"]["name"] == "all"


def test_diff_explicit_baseline_and_too_few(client: UIClient) -> None:
    """Repeated baseline_span_id params form the baseline; a tiny side is reported with counts."""
    doc = client.get(
        "/api/diff", params=[("span_id", D), ("baseline_span_id", A), ("baseline_span_id", B)]
    ).json()
    assert doc["baseline_samples"] == 30
    assert doc["comparable"] is False
    assert "span has 5 samples" in doc["message"]
    page = client.get("/diff", params={"span_id": D, "baseline_span_name": "GET /a"})
    assert page.status_code == 200
    assert "span has 5 samples" in page.text


def test_diff_span_name_without_baseline_is_400(client: UIClient) -> None:
    """Comparing a span name with itself in the same window is refused with a reason."""
    response = client.get("/api/diff", params={"span_name": "GET /a"})
    assert response.status_code == 400
    assert "earlier window" in response.json()["error"]


@pytest.mark.parametrize("fmt", ["pprof", "speedscope", "folded"])
def test_exports_download(client: UIClient, fmt: str) -> None:
    """Each export answers an attachment holding the span's samples."""
    response = client.get(f"/api/export/{fmt}", params={"span_id": B})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    if fmt == "pprof":
        profile = decode_pprof(gzip.decompress(response.content))
        assert sum(s.values[0] for s in profile.samples) == sample_count(B)
    elif fmt == "speedscope":
        assert json.loads(response.content)["$schema"].startswith("https://www.speedscope.app")
    else:
        assert sum(int(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()) == 20


def test_export_errors(client: UIClient) -> None:
    """An unknown format is 400 and a span without samples 404."""
    assert client.get("/api/export/svg", params={"span_id": B}).status_code == 400
    assert client.get("/api/export/folded", params={"span_id": "0" * 16}).status_code == 404


def test_static_assets_served(client: UIClient) -> None:
    """The vendored scripts and the page script are served under /static."""
    for path in FLAME_SCRIPTS:
        assert client.get(f"/static/{path}").status_code == 200
    assert client.get("/static/../ui.py").status_code == 404
