"""A guard in front of uvicorn's h11 protocol: slow, silent and noisy clients hold nothing.

uvicorn's own timers do not cover a client that sends too slowly: its keep-alive timer restarts on
every byte, and h11 waits for a request line's end however long it takes. Measured on uvicorn 0.55
with ``timeout_keep_alive=5`` (``benchmarks/README.md``): a head dribbled a byte per 0.1 s, and
binary noise without a line end, were both still held after 12 s. uvicorn has no setting for
either; the timeouts other servers document (hypercorn's ``read_timeout``, gunicorn's
``timeout``) bound idle time, which a trickle resets. So this subclass of uvicorn's
``H11Protocol`` adds, per connection:

* a deadline for each request head (:attr:`Limits.header_timeout`, from connecting or from the end
  of the previous reply): a head not complete by then closes the connection, however many bytes
  trickled in;
* a check of each request line as it arrives: a byte no request line can hold (a control byte or
  a non-ASCII one: binary noise, TLS spoken to a plain port) is answered ``400`` at once and the
  connection closed; h11 alone catches only a bad first byte.

A stalled body is the app's to bound (:attr:`Limits.body_idle_timeout`, 408).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol"]

logger = logging.getLogger("span_profiles.receiver")

# What a request line may hold: printable ASCII, space, tab, CR and LF.
_LINE_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_REASON = b"Invalid HTTP request line."
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REASON), _REASON)
)


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the guards above, ``header_timeout`` seconds per head."""

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request head and a request-line check."""

        _head_deadline: asyncio.TimerHandle | None = None
        _line_checked = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE and not self._line_checked:
                line, newline, _ = data.partition(b"\n")
                if not _LINE_BYTES.issuperset(line):
                    logger.info("closing a connection that sent no HTTP request line")
                    self.transport.write(_BAD_REQUEST)
                    self.transport.close()
                    return
                # Leading empty lines are allowed before the request line.
                self._line_checked = bool(newline) and bool(line.strip())
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm_head_deadline()
            else:
                self._line_checked = False
                if self._head_deadline is not None:
                    self._head_deadline.cancel()
                    self._head_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            if self._head_deadline is None and not self.transport.is_closing():
                self._head_deadline = self.loop.call_later(header_timeout, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closing a connection that sent no complete request head in time")
                self.transport.close()

    return GuardedH11Protocol
