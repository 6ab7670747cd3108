"""Reset CPU placement's process-wide state between tests."""

from __future__ import annotations

from span_profiles import _placement


def reset_placement() -> None:
    """Forget everything placement knows: a fresh state on the real system (tests only)."""
    _placement.release()
    _placement._state = _placement._State()
    _placement._system = _placement.LinuxSystem()
