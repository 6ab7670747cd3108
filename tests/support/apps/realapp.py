"""A FastAPI + SQLAlchemy async + asyncpg app on PostgreSQL, written to judge span profiles by stack.

Served by a real uvicorn (``--factory tests.support.apps.realapp:create_app``) for
``tests/e2e/test_realapp_e2e.py`` and ``benchmarks/realapp.py``; the harness that runs and judges
it is ``tests/support/realapp.py``. Not an example to copy: it is shaped so that every sample's stack says
which endpoint's work it is.

Endpoints (:data:`ENDPOINTS`): ``GET /health`` and ``GET /live`` (cheap, no database), and CRUD
through an ``AsyncSession`` from a ``yield`` dependency (so closing the session runs after the
response): ``GET /items`` (50 rows), ``GET /items/{id}``, ``POST /items``, ``PUT /items/{id}``,
and ``GET /items/export`` (``many_rows``, 5,000 rows).

**Stack ownership.** A frame of this file whose function is named ``<endpoint>`` or
``<endpoint>_<something>`` (:func:`owner_of`) is that endpoint's work: its handler and helpers;
its route (:class:`OwnedRoute` runs FastAPI's dependency solving, endpoint call and serialization
inside ``<endpoint>_route``); its session dependency (``<endpoint>_session``, so the session's
teardown after the response is attributable); its session classes (SQLAlchemy runs the sync
``Session`` in a greenlet whose stack starts at the ``Session`` method, and closes an
``AsyncSession`` in a task of its own: :func:`session_classes` names those entry points); and its
row decoder. The cheap endpoints burn a few hundred microseconds in helpers so that a short run
gets enough of their samples to judge. asyncpg decodes rows inside its protocol's
``data_received``, a Cython callback the event loop runs outside any task, which py-spy cannot see.
So every endpoint's query returns a payload column of its own PostgreSQL composite type
(``<endpoint>_payload``, one ``text`` field holding JSON); the codec set on every pooled connection
(:func:`set_payload_codecs`) decodes it with a Python function of that endpoint
(``<endpoint>_decode_payload``), which runs inside ``data_received`` and shows as a Python frame.
(asyncpg refuses codecs on domain types, and json/jsonb have one codec per connection: hence
composite types, which take tuple-format codecs.)

Environment: ``REALAPP_DATABASE_URL`` (SQLAlchemy URL, ``postgresql+asyncpg://...``),
``REALAPP_MODE`` = ``spans`` (``instrument_app``: span-profiles starts its sampler lazily) or
``agent`` (the baseline: ``pyroscope.configure`` alone, no tracing, no span-profiles),
``REALAPP_TELEMETRY`` = ``off``, ``on`` (FastAPI's built-in telemetry, ``operation_spans`` off) or
``operations`` (on, with ``operation_spans``), ``REALAPP_SERVICE`` (service name),
``PYROSCOPE_SERVER_ADDRESS`` and ``PYROSCOPE_UPLOAD_INTERVAL``. Every response carries
``x-span-id``: the span whose id labels the request's samples (none in the baseline).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import types
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    MutableMapping,
    Sequence,
)
from decimal import Decimal
from typing import Annotated, Any

from fastapi.requests import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import (
    Integer,
    Numeric,
    String,
    Text,
    cast,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import UserDefinedType

from fastapi import Depends, FastAPI, HTTPException

ENDPOINTS = ("health", "live", "list_items", "get_item", "create_item", "update_item", "many_rows")
"""Every endpoint's key: its handler's name and the prefix of its other functions."""

DB_ENDPOINTS = ("list_items", "get_item", "create_item", "update_item", "many_rows")
"""The endpoints that query the database, each through its own payload type and decoder."""

MANY_ROWS = 5000
SEED_ROWS = 5000
LIST_LIMIT = 50

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def owner_of(function: str, file: str) -> str | None:
    """The endpoint whose work a frame is (``function`` as the agent names it), or ``None``."""
    if not file.replace("\\", "/").endswith("/support/apps/realapp.py"):
        return None
    name = function.rsplit(".", 1)[-1]
    for endpoint in ENDPOINTS:
        if name == endpoint or name.startswith(endpoint + "_"):
            return endpoint
    return None


def is_decoder(function: str) -> bool:
    """Whether a frame of this file is one of the per-endpoint row decoders."""
    return function.endswith("_decode_payload")


# -- the schema ---------------------------------------------------------------------------------


class Base(DeclarativeBase):
    """Declarative base of the app's tables."""


class Item(Base):
    """A catalogue item: a few scalar columns and a JSON document."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    doc: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Payload(UserDefinedType[dict[str, Any]]):
    """One endpoint's composite payload type (``CREATE TYPE <name> AS (doc text)``)."""

    cache_ok = True

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def get_col_spec(self, **kw: Any) -> str:
        """The type's name in DDL and casts."""
        return self.type_name


def payload_of(endpoint: str) -> Any:
    """``CAST(ROW(items.doc::text) AS <endpoint>_payload)``: the doc, decoded by the endpoint."""
    return cast(func.row(cast(Item.doc, Text)), Payload(f"{endpoint}_payload")).label("payload")


def _document(n: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{n:06d}",
        "colour": ("red", "green", "blue", "black")[n % 4],
        "sizes": [36 + (n + k) % 12 for k in range(6)],
        "stock": {"north": n % 17, "south": n % 23, "east": n % 5},
        "description": f"item {n}: " + "lorem ipsum dolor sit amet " * 3,
    }


async def prepare_database(url: str) -> None:
    """Create the table, the payload types and :data:`SEED_ROWS` items, once (idempotent)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            for endpoint in DB_ENDPOINTS:
                exists = await conn.scalar(_type_exists(f"{endpoint}_payload"))
                if not exists:
                    await conn.exec_driver_sql(f"CREATE TYPE {endpoint}_payload AS (doc text)")
            count = await conn.scalar(select(func.count()).select_from(Item))
            if not count:
                await conn.execute(
                    insert(Item),
                    [
                        {"name": f"item {n}", "price": Decimal(n % 997) / 10, "doc": _document(n)}
                        for n in range(1, SEED_ROWS + 1)
                    ],
                )
    finally:
        await engine.dispose()


def _type_exists(name: str) -> Any:
    return text("SELECT EXISTS (SELECT 1 FROM pg_type WHERE typname = :name)").bindparams(name=name)


# -- the per-endpoint row decoders (run inside asyncpg's data_received) ---------------------------


def _decode(value: tuple[str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(value[0])
    document["in_stock"] = sum(document.get("stock", {}).values())
    return document


def _encode(value: dict[str, Any]) -> tuple[str]:
    return (json.dumps(value),)


def _decoder(endpoint: str) -> Callable[[tuple[str]], dict[str, Any]]:
    """A copy of :func:`_decode` named ``<endpoint>_decode_payload``."""
    return _named_copy(_decode, f"{endpoint}_decode_payload")


def _named_copy(function: Callable[..., Any], name: str) -> Any:
    """``function`` under another name: the agent reports frames by their code's name."""
    code = function.__code__.replace(co_name=name)
    if hasattr(code, "co_qualname"):  # 3.11+: the agent reports the qualified name
        code = code.replace(co_qualname=name)  # type: ignore[call-arg, unused-ignore]
    copy = types.FunctionType(
        code, function.__globals__, name, function.__defaults__, function.__closure__
    )
    copy.__qualname__ = name
    return copy


DECODERS = {endpoint: _decoder(endpoint) for endpoint in DB_ENDPOINTS}


def set_payload_codecs(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLAlchemy ``connect`` event: register every endpoint's payload codec on the connection."""

    async def register(conn: Any) -> None:
        for endpoint, decoder in DECODERS.items():
            await conn.set_type_codec(
                f"{endpoint}_payload",
                schema="public",
                encoder=_encode,
                decoder=decoder,
                format="tuple",
            )

    dbapi_connection.run_async(register)


# -- sessions -----------------------------------------------------------------------------------

# SQLAlchemy's async ORM runs the sync Session in a greenlet (its stack starts at the Session
# method, with no task frame above it) and closes an AsyncSession in a task of its own: per-endpoint
# session classes whose entry points are named copies make that work attributable too.


def _sync_execute(self: Session, *args: Any, **kwargs: Any) -> Any:
    return Session.execute(self, *args, **kwargs)


def _sync_commit(self: Session) -> None:
    Session.commit(self)


def _sync_close(self: Session) -> None:
    Session.close(self)


async def _async_close(self: AsyncSession) -> None:
    await AsyncSession.close(self)


def session_classes(endpoint: str) -> tuple[type[AsyncSession], type[Session]]:
    """``AsyncSession`` and ``Session`` subclasses whose greenlet and task entry points are named
    ``<endpoint>_async_close``, ``<endpoint>_sync_execute``, ``..._sync_commit``, ``..._sync_close``."""
    sync: type[Session] = type(
        f"{endpoint}_Session",
        (Session,),
        {
            name: _named_copy(function, f"{endpoint}_sync_{name}")
            for name, function in (
                ("execute", _sync_execute),
                ("commit", _sync_commit),
                ("close", _sync_close),
            )
        },
    )
    async_: type[AsyncSession] = type(
        f"{endpoint}_AsyncSession",
        (AsyncSession,),
        {"close": _named_copy(_async_close, f"{endpoint}_async_close")},
    )
    return async_, sync


_makers: dict[str, async_sessionmaker[AsyncSession]] = {}
"""Per endpoint, set at lifespan start."""


def _session_dependency(endpoint: str) -> Callable[[], AsyncIterator[AsyncSession]]:
    async def session() -> AsyncIterator[AsyncSession]:
        async with _makers[endpoint]() as session:
            yield session

    return session


def session_for(endpoint: str) -> Callable[[], AsyncIterator[AsyncSession]]:
    """The ``yield`` dependency of one endpoint, named ``<endpoint>_session``."""
    return _named_copy(_session_dependency(endpoint), f"{endpoint}_session")


def _route_handler(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        return await handler(request)

    return route


class OwnedRoute(APIRoute):
    """FastAPI's route, its handler (dependencies, endpoint, serialization) run inside a function
    named ``<endpoint>_route``: the framework's per-route work is attributable too."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped in a named copy of a pass-through."""
        handler = super().get_route_handler()
        return _named_copy(_route_handler(handler), f"{self.endpoint.__name__}_route")


# -- the endpoints ------------------------------------------------------------------------------


class ItemOut(BaseModel):
    """An item as the API returns it."""

    id: int
    name: str
    price: float
    in_stock: int
    colour: str


class ItemIn(BaseModel):
    """A new or changed item."""

    name: str
    price: float
    colour: str = "black"


_started = time.monotonic()


async def health() -> dict[str, Any]:
    """Readiness: the process's vital signs (cheap, no database)."""
    return health_status()


def health_status() -> dict[str, Any]:
    # A few hundred microseconds of the endpoint's own CPU, so that even a cheap endpoint gets
    # enough samples in a short run to judge where they land.
    checks = {f"check_{n}": health_check(n) for n in range(200)}
    return {"status": "ok", "uptime": round(time.monotonic() - _started, 3), "checks": checks}


def health_check(n: int) -> bool:
    return sum((n * k) % 7 for k in range(40)) % 13 != 0


async def live() -> dict[str, str]:
    """Liveness (cheaper)."""
    return live_status()


def live_status() -> dict[str, str]:
    flags = sorted(str(n * 31 % 97) for n in range(1500))
    return {"status": "alive", "flags": ",".join(flags[:3])}


def _item_out(row: Any) -> ItemOut:
    payload = row.payload
    return ItemOut(
        id=row.id,
        name=row.name,
        price=float(row.price),
        in_stock=payload["in_stock"],
        colour=payload["colour"],
    )


def _columns(endpoint: str) -> Any:
    return select(Item.id, Item.name, Item.price, payload_of(endpoint))


async def list_items(
    session: Annotated[AsyncSession, Depends(session_for("list_items"))],
) -> list[ItemOut]:
    """The latest :data:`LIST_LIMIT` items."""
    rows = (
        await session.execute(_columns("list_items").order_by(Item.id.desc()).limit(LIST_LIMIT))
    ).all()
    return list_items_render(rows)


def list_items_render(rows: Sequence[Any]) -> list[ItemOut]:
    return [_item_out(row) for row in rows]


async def get_item(
    item_id: int, session: Annotated[AsyncSession, Depends(session_for("get_item"))]
) -> ItemOut:
    """One item."""
    row = (await session.execute(_columns("get_item").where(Item.id == item_id))).first()
    if row is None:
        raise HTTPException(404, "no such item")
    return get_item_render(row)


def get_item_render(row: Any) -> ItemOut:
    return _item_out(row)


async def create_item(
    item: ItemIn, session: Annotated[AsyncSession, Depends(session_for("create_item"))]
) -> ItemOut:
    """Insert an item; return it as stored."""
    values = create_item_document(item)
    row = (
        await session.execute(
            insert(Item)
            .values(**values)
            .returning(Item.id, Item.name, Item.price, payload_of("create_item"))
        )
    ).one()
    await session.commit()
    return _item_out(row)


def create_item_document(item: ItemIn) -> dict[str, Any]:
    document = _document(abs(hash(item.name)) % 100_000)
    document["colour"] = item.colour
    return {"name": item.name, "price": Decimal(str(item.price)), "doc": document}


async def update_item(
    item_id: int,
    item: ItemIn,
    session: Annotated[AsyncSession, Depends(session_for("update_item"))],
) -> ItemOut:
    """Change an item's name and price; return it as stored."""
    row = (
        await session.execute(
            update(Item)
            .where(Item.id == item_id)
            .values(**update_item_values(item))
            .returning(Item.id, Item.name, Item.price, payload_of("update_item"))
        )
    ).first()
    if row is None:
        raise HTTPException(404, "no such item")
    await session.commit()
    return _item_out(row)


def update_item_values(item: ItemIn) -> dict[str, Any]:
    return {"name": item.name[:80], "price": Decimal(str(item.price))}


async def many_rows(
    session: Annotated[AsyncSession, Depends(session_for("many_rows"))],
) -> Response:
    """An export of the first :data:`MANY_ROWS` items: totals per colour and the rows as JSON."""
    rows = (await session.execute(_columns("many_rows").order_by(Item.id).limit(MANY_ROWS))).all()
    return Response(many_rows_render(rows), media_type="application/json")


def many_rows_render(rows: Sequence[Any]) -> bytes:
    totals: dict[str, float] = {}
    out = []
    for row in rows:
        payload = row.payload
        totals[payload["colour"]] = totals.get(payload["colour"], 0.0) + float(row.price)
        out.append([row.id, payload["sku"], payload["in_stock"]])
    return json.dumps({"count": len(rows), "totals": totals, "rows": out}).encode()


# -- wiring -------------------------------------------------------------------------------------


def current_span_id() -> str:
    """The current span's id, 16 hex digits (``0`` * 16 when there is none)."""
    return format(trace.get_current_span().get_span_context().span_id, "016x")


class SpanIdHeader:
    """Adds ``x-span-id`` to every response: the span current inside span-profiles' middleware.

    Added before ``instrument_app``, so it runs inside span-profiles' middleware (and inside
    FastAPI's telemetry, which wraps every user middleware): there the current span is the one
    whose id labels the request's samples, never one of FastAPI's operation spans.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the header to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-span-id", current_span_id().encode())

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=12, max_overflow=4)
    event.listen(engine.sync_engine, "connect", set_payload_codecs)
    return engine


def create_app() -> FastAPI:
    """The app, configured from the environment (see the module docstring)."""
    url = os.environ["REALAPP_DATABASE_URL"]
    mode = os.environ.get("REALAPP_MODE", "spans")
    telemetry_mode = os.environ.get("REALAPP_TELEMETRY", "off")
    service = os.environ.get("REALAPP_SERVICE", "realapp")
    if mode not in ("spans", "agent") or telemetry_mode not in ("off", "on", "operations"):
        sys.exit(f"bad REALAPP_MODE={mode!r} or REALAPP_TELEMETRY={telemetry_mode!r}")
    provider: Any = None
    telemetry: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}
    if mode == "spans":
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        trace.set_tracer_provider(provider)
        if telemetry_mode != "off":
            telemetry = {
                "tracer_provider": provider,
                "metrics": False,
                "logs": False,
                "operation_spans": telemetry_mode == "operations",
            }

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if mode == "agent":
            _start_agent_alone(service)
        engine = _engine(url)
        for endpoint in DB_ENDPOINTS:
            async_class, sync_class = session_classes(endpoint)
            _makers[endpoint] = async_sessionmaker(
                engine, class_=async_class, sync_session_class=sync_class, expire_on_commit=False
            )
        import span_profiles

        placement = span_profiles.current_placement()
        print(
            f"realapp: mode={mode} telemetry={telemetry_mode} cpu={placement.cpu} "
            f"loop_thread={placement.loop_thread} agent_threads={len(placement.agent_threads)}",
            file=sys.stderr,
            flush=True,
        )
        try:
            yield
        finally:
            await engine.dispose()
            if mode == "agent":
                import pyroscope

                pyroscope.shutdown()

    options: dict[str, Any] = {"telemetry": telemetry} if _has_telemetry() else {}
    app = FastAPI(title="realapp", lifespan=lifespan, **options)
    app.router.route_class = OwnedRoute
    app.add_api_route("/health", health)
    app.add_api_route("/live", live)
    app.add_api_route("/items", list_items, response_model=list[ItemOut])
    app.add_api_route("/items/export", many_rows)
    app.add_api_route("/items/{item_id}", get_item, response_model=ItemOut)
    app.add_api_route("/items", create_item, methods=["POST"], response_model=ItemOut)
    app.add_api_route("/items/{item_id}", update_item, methods=["PUT"], response_model=ItemOut)
    if mode == "spans":
        from span_profiles.fastapi import instrument_app

        app.add_middleware(SpanIdHeader)
        instrument_app(app, tracer_provider=provider)
    return app


def _has_telemetry() -> bool:
    import inspect

    return "telemetry" in inspect.signature(FastAPI.__init__).parameters


def _start_agent_alone(service: str) -> None:
    """The baseline: the agent as its README configures it, without span-profiles."""
    import pyroscope

    pyroscope.configure(
        application_name=service,
        server_address=os.environ["PYROSCOPE_SERVER_ADDRESS"],
        sample_rate=100,
        upload_interval=int(os.environ.get("PYROSCOPE_UPLOAD_INTERVAL", "10")),
        oncpu=True,
        gil_only=True,
    )
