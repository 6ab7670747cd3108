"""Why a request is refused: each error carries its HTTP status and its Connect error code.

Decoding, validation and the HTTP layer raise these; the web layer turns them into the Connect
error shape, ``{"code": ..., "message": ...}`` with the status.
"""

from __future__ import annotations

__all__ = ["InvalidInput", "PayloadTooLarge", "ReceiverError", "Unsupported"]


class ReceiverError(Exception):
    """A refused request: carries its HTTP status and its Connect error code."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidInput(ReceiverError, ValueError):
    """The request is well-formed HTTP but its content is not acceptable (Connect ``invalid_argument``)."""

    status = 400
    code = "invalid_argument"


class PayloadTooLarge(ReceiverError, ValueError):
    """A body, a decompressed payload or a decoded profile exceeds a limit (``resource_exhausted``)."""

    status = 413
    code = "resource_exhausted"


class Unsupported(ReceiverError):
    """An unsupported content type or content encoding (Connect ``unimplemented``, HTTP 415)."""

    status = 415
    code = "unimplemented"
