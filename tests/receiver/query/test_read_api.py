"""One read API behind the command line, the JSON API and the Python API: one naming rule for a
renamed span, the profile type as a value of the data, the export formats as a registry."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.protobuf", reason="the receiver extra (protobuf) is not installed")

from span_profiles.cli import main
from span_profiles.receiver import ProfileReader, ProfileStore, Receiver, Selection
from span_profiles.receiver.ingest.decode import decode_pprof, encode_pprof, encode_push_request
from span_profiles.receiver.query import exports
from span_profiles.receiver.query.exports import ExportFormat
from span_profiles.receiver.query.stacks import total_count
from tests.support.receiver import PERIOD, sample, series

A = "aaaaaaaaaaaaaaaa"
WALL = "ffffffffffffffff"
PUSH = "/push.v1.PusherService/Push"

pytestmark = pytest.mark.e2e


def _get(receiver: Receiver, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(body) if "json" in kind else body
    finally:
        connection.close()


def _push(receiver: Receiver, *one_series: Any) -> None:
    body = encode_push_request(
        (one.labels, [encode_pprof(profile) for profile in one.profiles]) for one in one_series
    )
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    try:
        headers = {"content-type": "application/proto", "content-encoding": "gzip"}
        connection.request("POST", PUSH, body=gzip.compress(body), headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


@pytest.fixture
def receiver(db_path: Path) -> Iterator[Receiver]:
    """A receiver with its web UI and JSON API."""
    with Receiver("127.0.0.1", 0, db_path) as running:
        yield running


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_renamed_span_has_one_name_in_the_cli_and_the_http_api(
    db_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """A span whose early samples carry a bare method (more of them) and whose last upload carries
    its route is listed under the route by `spans`, /api/spans, the overview and the span page."""
    with ProfileStore(db_path) as store:
        store.add(
            [series([sample(["open_session"], 9, [("span_id", A), ("span_name", "GET")])])],
            received_at=1_800_000_000.0,
        )
        store.add(
            [series([sample(["view"], 2, [("span_id", A), ("span_name", "GET /items/{id}")])])],
            received_at=1_800_000_010.0,
        )
    name = "GET /items/{id}"
    cli = _cli_json(capsys, "spans", "--db", str(db_path))["spans"]
    assert [(s["span_id"], s["span_name"], s["sample_count"]) for s in cli] == [(A, name, 11)]
    status, api = _get(receiver, "/api/spans")
    assert status == 200
    assert [(s["span_id"], s["span_name"], s["samples"]) for s in api["spans"]] == [(A, name, 11)]
    status, overview = _get(receiver, "/api/overview?since=all")
    assert [s["span_name"] for s in overview["top_spans"]] == [name]
    assert [(e["span_name"], e["requests"]) for e in overview["endpoints"]] == [(name, 1)]
    status, span = _get(receiver, f"/api/spans/{A}")
    assert span["span"]["span_name"] == name
    top = _cli_json(capsys, "top", "--span-id", A, "--db", str(db_path))
    assert top["total_count"] == span["total_samples"] == 11


def test_wall_data_is_stored_as_wall_and_never_shown_as_cpu(
    db_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wall-clock push (``__name__=wall``, samples in wall/nanoseconds) is stored as type
    ``wall``, weighted by its nanoseconds, and appears in no CPU view of the UI, the JSON API, the
    exports or the command line."""
    cpu = series([sample(["burn", "main"], 3, [("span_id", A), ("span_name", "GET /a")])])
    wall_labels = [("span_id", WALL), ("span_name", "GET /wall")]
    wall = series([sample(["sleep", "main"], 7, wall_labels)], name="wall")
    _push(receiver, cpu, wall)

    with ProfileReader(db_path) as reader:
        assert reader.profile_types() == ["cpu", "wall"]
        (stored,) = reader.samples(Selection(profile_type="wall"))
        assert (stored.profile_type, stored.nanos, stored.count) == ("wall", 7 * PERIOD, 7)
        assert [s.span_id for s in reader.spans(Selection(profile_type="wall"))] == [WALL]
        assert [s.name for s in reader.top(Selection(profile_type="wall"), limit=1)] == ["sleep"]
        assert [s.span_id for s in reader.spans()] == [A]
        assert "sleep" not in {s.name for s in reader.top(limit=None)}
        assert reader.total_count() == 3
        data, _ = exports.export(
            reader, Selection(span_ids=(WALL,), profile_type="wall"), "pprof", title=WALL
        )
        exported = decode_pprof(gzip.decompress(data))
        assert exported.sample_types == (("samples", "count"), ("wall", "nanoseconds"))
        assert [s.values for s in exported.samples] == [(7, 7 * PERIOD)]

    texts = []
    for path in (
        "/api/overview?since=all",
        "/api/spans",
        "/api/span-names?since=all",
        "/api/flame?span_name=GET%20/wall",
        "/api/endpoint?span_name=GET%20/wall&since=all",
        "/?since=all",
    ):
        status, body = _get(receiver, path)
        assert status == 200, path
        texts.append(json.dumps(body) if not isinstance(body, bytes) else body.decode())
    assert all(WALL not in text and "sleep" not in text for text in texts)
    assert any(A in text for text in texts)
    for path in (f"/api/spans/{WALL}", f"/api/export/folded?span_id={WALL}"):
        assert _get(receiver, path)[0] == 404, path
    # The span's page shows its wall samples in the wall tab; its CPU tab says it has none.
    status, page = _get(receiver, f"/spans/{WALL}")
    cpu_panel = page.decode().split('id="panel-cpu"')[1].split("</section>")[0]
    assert status == 200
    assert "No CPU samples for this span" in cpu_panel
    assert "sleep" not in cpu_panel
    assert WALL not in json.dumps(_cli_json(capsys, "spans", "--db", str(db_path)))
    top = _cli_json(capsys, "top", "--span-id", WALL, "--db", str(db_path))
    assert (top["total_count"], top["functions"]) == (0, [])


def test_an_export_format_is_one_registry_entry(
    db_path: Path,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A format added to the registry is offered by the pages, served by the JSON API and
    written by the command line, with no other change."""
    _push(
        receiver, series([sample(["burn", "main"], 3, [("span_id", A), ("span_name", "GET /a")])])
    )

    def write_count(source: Any, selection: Selection, title: str) -> bytes:
        return f"{title}: {total_count(source, selection)}\n".encode()

    monkeypatch.setitem(
        exports.FORMATS, "count", ExportFormat("count", "text/plain", ".txt", write_count)
    )
    status, page = _get(receiver, f"/spans/{A}")
    assert status == 200
    for fmt in ("pprof", "speedscope", "folded", "count"):
        assert f"/api/export/{fmt}?span_id={A}".encode() in page
    status, body = _get(receiver, f"/api/export/count?span_id={A}")
    assert (status, body) == (200, f"{A}: 3\n".encode())
    out = db_path.with_name("count.txt")
    assert (
        main(["export", "--span-id", A, "--format", "count", "-o", str(out), "--db", str(db_path)])
        == 0
    )
    assert out.read_text() == f"{A}: 3\n"
