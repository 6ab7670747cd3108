"""Self-disabling features: an internal failure is logged once and that feature turns itself off."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("span_profiles")

_lock = threading.Lock()
_failed: set[str] = set()


def fail(feature: str, exc: BaseException, disable: Callable[[], None] | None = None) -> None:
    """Record that ``feature`` raised ``exc``: log it once, then run ``disable``.

    The instrumented application must keep working, so this never raises; ``disable`` errors are
    logged as well.
    """
    with _lock:
        first = feature not in _failed
        _failed.add(feature)
    if first:
        logger.error(
            "span-profiles: %s failed and is now switched off; the application is unaffected",
            feature,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    if disable is not None:
        try:
            disable()
        except Exception:
            logger.exception("span-profiles: switching off %s failed", feature)


def reset() -> None:
    """Forget past failures (used by ``uninstrument()`` so a later ``instrument()`` starts clean)."""
    with _lock:
        _failed.clear()
