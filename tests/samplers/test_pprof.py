"""The hand-written pprof and PushRequest encoder, checked by the receiver's protobuf decoder."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from span_profiles._samplers.pprof import ProfileBuilder, push_request
from span_profiles._samplers.push import PATH, Pusher, PushError
from span_profiles.receiver import ProfileReader, Selection, start_receiver_in_thread
from span_profiles.receiver.ingest.decode import _ProfileMessage, decode_pprof, decode_push_request

STACK_A = [("/app/a.py", "leaf", 3), ("/app/a.py", "handler", 10), ("/srv/main.py", "<module>", 1)]
STACK_B = [("/app/b.py", "other", 7), ("/app/a.py", "handler", 12), ("/srv/main.py", "<module>", 1)]
SPAN = (("span_id", "0123456789abcdef"), ("span_name", "GET /items/{id}"))


def _profile() -> ProfileBuilder:
    builder = ProfileBuilder(("cpu", "nanoseconds"), 10_000_000)
    builder.add(STACK_A, SPAN, 10_000_000)
    builder.add(STACK_A, SPAN, 10_000_000)
    builder.add(STACK_B, (), 30_000_000)
    return builder


def test_the_profile_decodes_with_every_field() -> None:
    raw = _profile().encode(time_nanos=1_700_000_000_000_000_000, duration_nanos=10**10)

    profile = decode_pprof(raw)

    assert profile.sample_types == (("cpu", "nanoseconds"),)
    assert profile.period_type == ("cpu", "nanoseconds")
    assert profile.period == 10_000_000
    assert profile.time_nanos == 1_700_000_000_000_000_000
    assert profile.duration_nanos == 10**10
    by_stack = {s.functions: s for s in profile.samples}
    a = by_stack[("leaf", "handler", "<module>")]
    assert a.values == (20_000_000,)  # the two adds of one stack and labels are one sample
    assert a.labels == SPAN
    assert a.files == ("/app/a.py", "/app/a.py", "/srv/main.py")
    b = by_stack[("other", "handler", "<module>")]
    assert b.values == (30_000_000,)
    assert b.labels == ()


def test_lines_make_locations_and_functions_are_shared() -> None:
    message: Any = _ProfileMessage()
    message.ParseFromString(_profile().encode(0, 0))
    strings = list(message.string_table)
    assert strings[0] == ""
    names = sorted(strings[f.name] for f in message.function)
    # handler appears at two lines: two locations, one function.
    assert names == ["<module>", "handler", "leaf", "other"]
    assert len(message.location) == 5
    assert all(len(location.line) == 1 for location in message.location)
    lines: dict[str, list[int]] = {
        strings[message.function[loc.line[0].function_id - 1].name]: [] for loc in message.location
    }
    for location in message.location:
        function = message.function[location.line[0].function_id - 1]
        lines[strings[function.name]].append(location.line[0].line)
    assert sorted(lines["handler"]) == [10, 12]


def test_an_empty_profile_is_valid() -> None:
    builder = ProfileBuilder(("wall", "nanoseconds"), 10_000_000)
    assert len(builder) == 0
    profile = decode_pprof(builder.encode(5, 6))
    assert profile.samples == ()
    assert profile.sample_types == (("wall", "nanoseconds"),)


def test_values_beyond_32_bits_and_unicode_survive() -> None:
    builder = ProfileBuilder(("cpu", "nanoseconds"), 1)
    builder.add([("/app/ü.py", "fünf", 70000)], (("span_name", "GET /ä"),), 3 * 10**12)
    sample = decode_pprof(builder.encode(0, 0)).samples[0]
    assert sample.values == (3 * 10**12,)
    assert sample.functions == ("fünf",)
    assert sample.files == ("/app/ü.py",)
    assert sample.labels == (("span_name", "GET /ä"),)


def test_a_push_request_carries_series_labels_and_profiles() -> None:
    raw = _profile().encode(0, 10**10)
    labels = {"__name__": "process_cpu", "service_name": "shop", "env": "dev"}

    series = decode_push_request(push_request([(labels, [raw, raw])]))

    assert len(series) == 1
    assert series[0].labels == tuple(labels.items())
    assert len(series[0].profiles) == 2


class _Capture(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"refused for the test" if self.status != 200 else b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, type[_Capture]]]:
    handler = type("Handler", (_Capture,), {"requests": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.e2e
def test_the_upload_has_the_agents_path_headers_and_gzip(
    capture: tuple[str, type[_Capture]],
) -> None:
    url, handler = capture
    pusher = Pusher(
        url + "/prefix",
        basic_auth_username="user",
        basic_auth_password="secret",
        tenant_id="team-a",
        http_headers={"x-extra": "1"},
    )
    body = push_request([({"service_name": "shop"}, [_profile().encode(0, 0)])])

    pusher.push(body, timeout=5)

    path, headers, sent = handler.requests[0]
    assert path == "/prefix" + PATH
    assert headers["content-type"] == "application/proto"
    assert headers["content-encoding"] == "gzip"
    assert headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["x-extra"] == "1"
    assert gzip.decompress(sent) == body


@pytest.mark.e2e
def test_a_refused_upload_raises(capture: tuple[str, type[_Capture]]) -> None:
    url, handler = capture
    handler.status = 429
    with pytest.raises(PushError, match="429"):
        Pusher(url).push(push_request([]), timeout=5)


def test_a_dead_server_raises_within_the_timeout() -> None:
    with pytest.raises(PushError):
        Pusher("http://127.0.0.1:9").push(push_request([]), timeout=2)


@pytest.mark.e2e
def test_the_local_receiver_stores_what_is_pushed(tmp_path: Path) -> None:
    receiver = start_receiver_in_thread(port=0, db_path=tmp_path / "profiles.db")
    try:
        labels = {"__name__": "process_cpu", "service_name": "shop", "region": "eu"}
        Pusher(receiver.url).push(
            push_request([(labels, [_profile().encode(1_700_000_000 * 10**9, 10**10)])]),
            timeout=10,
        )
        with ProfileReader(receiver.db_path) as reader:
            samples = list(reader.samples(Selection(service="shop")))
    finally:
        receiver.stop()
    counts = {s.functions: (s.count, s.label_values("span_id")) for s in samples}
    assert counts == {
        ("leaf", "handler", "<module>"): (2, ("0123456789abcdef",)),
        ("other", "handler", "<module>"): (3, ()),
    }
    assert ("region", "eu") in samples[0].series_labels


def test_equal_stacks_and_labels_are_one_sample_whichever_objects_carry_them() -> None:
    """Stacks and labels are looked up by identity first: an equal copy is the same sample,
    and a different stack in a new object is its own."""
    builder = ProfileBuilder(("wall", "nanoseconds"), 10_000_000)
    for _ in range(3):
        builder.add(STACK_A, SPAN, 1)
    builder.add(list(STACK_A), tuple(list(SPAN)), 10)
    builder.add(tuple(STACK_B), tuple(list(SPAN)), 100)
    builder.add(list(STACK_A), (), 1000)
    samples = {
        (s.functions, s.labels): s.values for s in decode_pprof(builder.encode(0, 0)).samples
    }
    assert samples == {
        (("leaf", "handler", "<module>"), SPAN): (13,),
        (("other", "handler", "<module>"), SPAN): (100,),
        (("leaf", "handler", "<module>"), ()): (1000,),
    }
