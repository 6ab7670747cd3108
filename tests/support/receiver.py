"""Helpers for the receiver tests: test vectors, small profiles built by hand, and uploads sent
to a running receiver."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from span_profiles.receiver import ProfileReader
from span_profiles.receiver.model import Profile, Sample, Series

if TYPE_CHECKING:
    import httpx

    from span_profiles.receiver import Receiver

DATA = Path(__file__).parent / "data"
"""Captured agent uploads (``data/README.md`` says how they were made)."""
SPEEDSCOPE_SCHEMA_FILE = Path(__file__).parent / "speedscope" / "file-format-schema.json"
"""speedscope's file-format schema (with its licence), to validate exports against."""
PERIOD = 10_000_000
CPU = ("cpu", "nanoseconds")


def upload_bodies(case: str) -> list[Path]:
    """The copied ``NNNN.body`` files of one capture case, in order."""
    bodies = sorted((DATA / case).glob("*.body"))
    assert bodies, f"no test vectors for {case}"
    return bodies


def upload_headers(body: Path) -> dict[str, str]:
    """The request headers captured with ``body``."""
    meta = json.loads(body.with_suffix(".json").read_text())
    return {name: value for name, value in meta["headers"]}


def spans_json(case: str) -> dict[str, list[str]]:
    """Root span id -> ``[path, query]`` for one asyncio case."""
    spans: dict[str, list[str]] = json.loads((DATA / case / "spans.json").read_text())
    return spans


def sample(
    functions: Sequence[str],
    count: int = 1,
    labels: Sequence[tuple[str, str]] = (),
    files: Sequence[str] | None = None,
) -> Sample:
    """A CPU sample of ``count`` periods, stack given leaf first."""
    return Sample(
        values=(count * PERIOD,),
        functions=tuple(functions),
        files=tuple(files) if files is not None else tuple(f"/srv/{f}.py" for f in functions),
        labels=tuple(labels),
    )


def series(
    samples: Sequence[Sample],
    service: str = "svc",
    extra: Sequence[tuple[str, str]] = (),
    *,
    name: str = "process_cpu",
) -> Series:
    """One series (``__name__`` ``name``: ``process_cpu``, or ``wall`` with samples of type
    ``wall/nanoseconds``) with a single profile holding ``samples``."""
    kind = ("wall", "nanoseconds") if name == "wall" else CPU
    profile = Profile(
        sample_types=(kind,),
        period_type=kind,
        period=PERIOD,
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=10_000_000_000,
        samples=tuple(samples),
    )
    labels = (("__name__", name), ("service_name", service), *extra)
    return Series(labels=labels, profiles=(profile,))


def read_until_closed(client: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    chunks = []
    try:
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - start


PROTO = {"content-type": "application/proto"}
"""The headers of a plain push."""
GZIP_PROTO = {"content-type": "application/proto", "content-encoding": "gzip"}
"""The headers of a gzipped push (what the agent sends)."""


class Reply:
    """Status, headers and body of one HTTP exchange."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.body = response.read()

    def error(self) -> dict[str, str]:
        """The Connect error body, after checking its content type."""
        assert self.headers["content-type"] == "application/json"
        document: dict[str, str] = json.loads(self.body)
        assert set(document) == {"code", "message"}
        return document


def post(
    receiver: Receiver,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    method: str = "POST",
) -> Reply:
    """Send one request on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        return Reply(connection.getresponse())
    finally:
        connection.close()


def stored(db_path: Path) -> int:
    """How many samples the database holds."""
    with ProfileReader(db_path) as store:
        return sum(1 for _ in store.samples())


def push_body(*one_series: Series) -> bytes:
    """An uncompressed PushRequest for hand-made series."""
    # Imported here: the helpers above need no protobuf.
    from span_profiles.receiver.ingest.decode import encode_pprof, encode_push_request

    return encode_push_request(
        (one.labels, [encode_pprof(profile) for profile in one.profiles]) for one in one_series
    )


class UIClient:
    """Synchronous GETs against the receiver's ASGI app, in process (``httpx.ASGITransport``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET ``url``; redirects are not followed."""
        # Imported here: the helpers above need neither.
        import anyio
        import httpx

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
                return await client.get(url, **kwargs)

        return anyio.run(go)
