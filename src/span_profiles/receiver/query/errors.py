"""Why a view cannot be built: the web layer answers 400 or 404, the command line exits 1."""

from __future__ import annotations

__all__ = ["NotFound", "ViewError"]


class ViewError(ValueError):
    """A view cannot be built from these arguments; the message says why (HTTP 400, CLI exit 1)."""


class NotFound(ViewError):
    """The span or span name asked for has no samples in the window (HTTP 404)."""
