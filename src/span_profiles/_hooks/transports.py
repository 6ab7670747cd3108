"""asyncio I/O: the loop's work on a connection carries the labels of the request it serves.

A database driver decodes the rows it receives in its protocol's ``data_received``, which the
loop calls outside any task: on uvloop from native code, after the last task step's labels are
gone; on stdlib loops through a reader callback that runs in whatever context created the
connection or last resumed reading (a request that ended long ago, or one still running). So the
per-step hooks cannot tell whose work it is. Who can: a client connection answers the request
that wrote to it last. This module keeps, per client connection, the request that last wrote
(its label :class:`~span_profiles._core.engine.Holder`, whose labels are empty once that request
is over) and shows those labels while the loop reads for it. A connection whose writer is not
known, a server connection (whose next request has no span yet) and any protocol we don't wrap
get no labels at all: never another request's.

What is covered (the README's table is generated from the same facts):

* stdlib selector loops, every protocol: client socket transports record their writer in
  ``write``/``writelines``; their reader callback (receiving, TLS, the protocol) shows the
  writer's labels. Server socket transports read with no labels, in the context they were
  created in (``resume_reading`` from a request no longer leaks that request into the next
  request's task).
* uvloop, client connections made by ``create_connection``/``create_unix_connection``: the
  protocol's ``data_received``/``buffer_updated``/``eof_received`` show the writer's labels; the
  protocol writes through a transport proxy that records the writer (``start_tls`` and
  ``sendfile`` are given the real transport). Protocols set on a transport later
  (``set_protocol``) are not covered, except asyncpg's:
* asyncpg, on every loop and every connection path (its STARTTLS negotiation sets its protocol
  by hand): its protocol class is patched when asyncpg is imported.

psycopg 3 and ``redis.asyncio`` do their work in the request's task (psycopg waits with
``add_reader`` callbacks created by the waiting task; redis parses in the task from a stream
buffer), so their few callback instructions already carry the right labels or none.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import functools
import sys
import threading
import weakref
from collections.abc import Callable
from contextvars import Context, ContextVar
from typing import Any

from span_profiles._core import engine, guard
from span_profiles._core.engine import Holder, HotPath
from span_profiles._core.patching import Patches
from span_profiles._core.sinks import EMPTY, Labels
from span_profiles._hooks import installed_module, no_undo

__all__ = ["OwnedTransport", "install"]

_get_ident = threading.get_ident

_OWNER_ATTRIBUTE = "_span_profiles_owner"
"""Where a covered protocol or stdlib transport keeps its :class:`_Owner`."""
_SERVER_CONTEXT = "_span_profiles_context"
"""Where a stdlib server transport keeps the context it was created in."""


class _Owner:
    """The request a client connection works for: the holder of the last writer's labels."""

    __slots__ = ("holder",)

    def __init__(self) -> None:
        self.holder: Holder | None = None

    def labels(self) -> Labels:
        holder = self.holder
        return EMPTY if holder is None else holder.labels


class _State:
    """What the wrappers of one installation read: the hot path and the writer lookup."""

    def __init__(self, hot: HotPath, var: ContextVar[Any]) -> None:
        self.hot = hot
        self.active = True
        self.reading: _Owner | None = None
        """The connection whose read side runs now (on the loop's thread)."""
        key, holder, var_get = hot.key, hot.holder, var.get

        def writer() -> Holder | None:
            # Written from a read callback (TLS records, a protocol's own replies, a proxy
            # forwarding): for the request that connection serves, not for the context the
            # callback happens to run in.
            reading = self.reading
            if reading is not None:
                return reading.holder
            return holder(var_get().get(key))

        self.writer = writer

    def show(self, labels: Labels) -> None:
        """Show ``labels`` on this thread."""
        hot = self.hot
        if hot.applied(_get_ident(), EMPTY) is not labels:
            try:
                hot.apply[0](labels)
            except Exception as exc:
                engine.sink_failed(exc)

    def read_side(self, owner: _Owner | None, callback: Callable[..., Any], *args: Any) -> Any:
        """Run a connection's read-side ``callback`` under its owner's labels (none if unknown)."""
        try:
            self.show(EMPTY if owner is None else owner.labels())
        except Exception as exc:
            guard.fail("the I/O callback hook", exc, self.off)
            return callback(*args)
        reading, self.reading = self.reading, owner
        try:
            return callback(*args)
        finally:
            self.reading = reading
            # What follows is the loop's own work (no labels), or the rest of an outer read.
            self.show(EMPTY if reading is None else reading.labels())

    def off(self) -> None:
        self.active = False


# -- uvloop and asyncpg: the protocol's side --------------------------------------------------


class OwnedTransport(asyncio.Transport):
    """The transport a covered protocol sees: the real one, noting who writes to it.

    Everything else goes to the real transport. The loop's own ``start_tls``/``sendfile`` are
    handed the real transport (they check its type).
    """

    __slots__ = ("_owner", "_state", "_transport")

    def __init__(self, transport: Any, owner: _Owner, state: _State) -> None:
        # No super().__init__(): get_extra_info goes to the real transport.
        self._transport = transport
        self._owner = owner
        self._state = state

    def write(self, data: Any) -> None:
        """Note the writer, then write."""
        if self._state.active:
            self._owner.holder = self._state.writer()
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        """Note the writer, then write."""
        if self._state.active:
            self._owner.holder = self._state.writer()
        self._transport.writelines(list_of_data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The real transport's."""
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        """The real transport's."""
        return bool(self._transport.is_closing())

    def close(self) -> None:
        """Close the real transport."""
        self._transport.close()

    def set_protocol(self, protocol: Any) -> None:
        """The real transport's."""
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> Any:
        """The real transport's."""
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        """The real transport's."""
        return bool(self._transport.is_reading())

    def pause_reading(self) -> None:
        """The real transport's."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """The real transport's."""
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The real transport's."""
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        """The real transport's."""
        return int(self._transport.get_write_buffer_size())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The real transport's."""
        low, high = self._transport.get_write_buffer_limits()
        return low, high

    def write_eof(self) -> None:
        """The real transport's."""
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        """The real transport's."""
        return bool(self._transport.can_write_eof())

    def abort(self) -> None:
        """The real transport's."""
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def __repr__(self) -> str:
        return repr(self._transport)


def _real(transport: Any) -> Any:
    return transport._transport if isinstance(transport, OwnedTransport) else transport


def _reading(state: _State, owner: _Owner, callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` (a protocol's read-side method) run under the connection owner's labels."""

    def read_side(*args: Any) -> Any:
        if not state.active:
            return callback(*args)
        return state.read_side(owner, callback, *args)

    return read_side


_READ_SIDE = ("data_received", "buffer_updated", "eof_received")


def _own_protocol(state: _State, protocol: Any) -> None:
    """Cover one protocol instance (uvloop client connections); silently nothing if it can't."""
    if getattr(type(protocol), _OWNER_ATTRIBUTE, None) is not None:
        return  # its class is covered (asyncpg)
    try:
        namespace = vars(protocol)
    except TypeError:
        return  # __slots__ or a native protocol: no labels in its callbacks
    owner = _Owner()
    for name in _READ_SIDE:
        method = getattr(protocol, name, None)
        if method is not None:
            namespace[name] = _reading(state, owner, method)
    made = protocol.connection_made

    def connection_made(transport: Any) -> Any:
        return made(OwnedTransport(transport, owner, state) if state.active else transport)

    namespace["connection_made"] = connection_made


def _wrap_factory(state: _State, factory: Callable[[], Any]) -> Callable[[], Any]:
    def covered_factory() -> Any:
        protocol = factory()
        if state.active:
            try:
                _own_protocol(state, protocol)
            except Exception as exc:
                guard.fail("the I/O callback hook", exc, state.off)
        return protocol

    return covered_factory


def _hook_uvloop(state: _State, patches: Patches) -> None:
    uvloop = installed_module("uvloop")
    if uvloop is None:
        return
    loop_class = uvloop.Loop
    for name in ("create_connection", "create_unix_connection"):
        original = getattr(loop_class, name)
        if hasattr(original, "__wrapped__"):
            continue

        def connect(
            self: Any, protocol_factory: Any, *args: Any, _original: Any = original, **kwargs: Any
        ) -> Any:
            return _original(self, _wrap_factory(state, protocol_factory), *args, **kwargs)

        functools.update_wrapper(connect, original)
        patches.set(loop_class, name, connect)
    _unwrap_on(loop_class, patches)


def _unwrap_on(loop_class: type, patches: Patches) -> None:
    # The loops check the type of the transport they are given.
    for name in ("start_tls", "sendfile"):
        original = getattr(loop_class, name, None)
        if original is None or hasattr(original, "__wrapped__"):
            continue

        def unwrapping(
            self: Any, transport: Any, *args: Any, _original: Any = original, **kwargs: Any
        ) -> Any:
            return _original(self, _real(transport), *args, **kwargs)

        functools.update_wrapper(unwrapping, original)
        patches.set(loop_class, name, unwrapping)


class _AsyncpgCover:
    """Patches asyncpg's protocol class once asyncpg is imported (checked per local root)."""

    def __init__(self, state: _State, patches: Patches) -> None:
        self.state = state
        self.patches = patches
        self.covered: Any = None
        """The protocol class covered last (asyncpg has one; a reload makes another)."""

    def __call__(self) -> None:
        module = sys.modules.get("asyncpg.protocol.protocol")
        if module is None:
            return
        protocol_class = getattr(module, "Protocol", None)
        if protocol_class is None or protocol_class is self.covered:
            return
        self.covered = protocol_class
        try:
            self._cover(protocol_class)
        except Exception as exc:
            guard.fail("the asyncpg I/O hook", exc)

    def _cover(self, protocol_class: type) -> None:
        state = self.state
        if getattr(protocol_class, _OWNER_ATTRIBUTE, None) is not None:
            return
        made = protocol_class.connection_made  # type: ignore[attr-defined]
        received = protocol_class.data_received  # type: ignore[attr-defined]

        def connection_made(self: Any, transport: Any) -> Any:
            if not state.active:
                return made(self, transport)
            owner = _Owner()
            vars(self)[_OWNER_ATTRIBUTE] = owner
            return made(self, OwnedTransport(transport, owner, state))

        def data_received(self: Any, data: Any) -> Any:
            owner = vars(self).get(_OWNER_ATTRIBUTE)
            if owner is None or not state.active:
                return received(self, data)
            return state.read_side(owner, received, self, data)

        functools.update_wrapper(connection_made, made)
        functools.update_wrapper(data_received, received)
        patches = self.patches
        patches.set(protocol_class, "connection_made", connection_made)
        patches.set(protocol_class, "data_received", data_received)
        patches.set(protocol_class, _OWNER_ATTRIBUTE, True)


# -- stdlib selector loops: the transport's side -----------------------------------------------

_Handle = asyncio.events.Handle
_SOCKET_TRANSPORT: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport")  # noqa: B009


def _hook_stdlib(state: _State, patches: Patches) -> None:
    # Private stdlib classes (typeshed leaves them out): typed loosely.
    transport_class: Any = _SOCKET_TRANSPORT
    loop_class: Any = asyncio.selector_events.BaseSelectorEventLoop
    if hasattr(loop_class._add_reader, "__wrapped__"):
        return
    original_run = _Handle._run
    unpatched_run = getattr(original_run, "__wrapped__", original_run)

    class ClientRead(_Handle):
        """A client socket transport's reader callback: shown as its last writer's request."""

        __slots__ = ()

        def _run(self) -> None:
            if not state.active:
                unpatched_run(self)
                return
            owner = vars(self._callback.__self__).get(_OWNER_ATTRIBUTE)  # type: ignore[attr-defined]
            # The stdlib body itself, not the patched one, which would show the callback's
            # context (whoever created the connection).
            state.read_side(owner, unpatched_run, self)

    class ServerRead(_Handle):
        """A server socket transport's reader callback: the next request has no span yet."""

        __slots__ = ()

        def _run(self) -> None:
            if not state.active:
                unpatched_run(self)
                return
            state.read_side(None, unpatched_run, self)

    original_add_reader = loop_class._add_reader

    def _add_reader(self: Any, fd: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        # CPython 3.15 passes the transport's context (``context=``).
        result = original_add_reader(self, fd, callback, *args, **kwargs)
        if state.active:
            try:
                _cover_reader(self, fd, callback, ClientRead, ServerRead)
            except Exception as exc:
                guard.fail("the I/O callback hook", exc, state.off)
        return result

    functools.update_wrapper(_add_reader, original_add_reader)
    patches.set(loop_class, "_add_reader", _add_reader)

    # connect_accepted_socket() makes a server's connection with no server object: remember
    # its protocols, so its transport reads as a server's.
    original_accept = loop_class.connect_accepted_socket

    def connect_accepted_socket(self: Any, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        def server_protocol() -> Any:
            protocol = protocol_factory()
            # Not weak-referenceable: read as a client connection whose writer is unknown.
            with contextlib.suppress(TypeError):
                _server_protocols.add(protocol)
            return protocol

        return original_accept(self, server_protocol, *args, **kwargs)

    functools.update_wrapper(connect_accepted_socket, original_accept)
    patches.set(loop_class, "connect_accepted_socket", connect_accepted_socket)

    for name in ("write", "writelines"):
        original = transport_class.__dict__.get(name)
        if original is None:
            continue  # writelines: inherited, and it calls write

        def writing(self: Any, data: Any, _original: Any = original) -> None:
            if state.active and self._server is None and self._protocol not in _server_protocols:
                owner = vars(self).get(_OWNER_ATTRIBUTE)
                if owner is None:
                    owner = vars(self)[_OWNER_ATTRIBUTE] = _Owner()
                owner.holder = state.writer()
            _original(self, data)

        functools.update_wrapper(writing, original)
        patches.set(transport_class, name, writing)
    _unwrap_on(asyncio.base_events.BaseEventLoop, patches)


_server_protocols: weakref.WeakSet[Any] = weakref.WeakSet()
"""Protocols of connections a server accepted through ``connect_accepted_socket``."""


def _cover_reader(
    loop: Any, fd: Any, callback: Any, client: type[_Handle], server: type[_Handle]
) -> None:
    transport = getattr(callback, "__self__", None)
    if not isinstance(transport, _SOCKET_TRANSPORT):
        return
    key = loop._selector.get_map().get(fd)
    handle: Any = None if key is None else key.data[0]
    kind = type(handle)  # a plain Handle of this callback, not one already covered
    if kind is not _Handle or handle._callback is not callback:
        return
    if transport._server is None and transport._protocol not in _server_protocols:
        handle.__class__ = client
        return
    # A server transport reads in the context it was created in, not in that of a request
    # that resumed reading (the next request's task is created in this context).
    namespace = vars(transport)
    context: Context | None = namespace.get(_SERVER_CONTEXT)
    if context is None:
        context = namespace[_SERVER_CONTEXT] = handle._context
    else:
        handle._context = context
    handle.__class__ = server


def install(hot: HotPath) -> Callable[[], None]:
    """Cover the stdlib selector transports, uvloop's client connections and asyncpg."""
    var = hot.var
    if var is None:
        return no_undo
    state = _State(hot, var)
    patches = hot.patches
    _hook_stdlib(state, patches)
    _hook_uvloop(state, patches)
    asyncpg = _AsyncpgCover(state, patches)
    hot.root_started.append(asyncpg)
    asyncpg()
    return state.off
