"""Checkpoint helpers for the label oracle tests."""

from __future__ import annotations

from collections.abc import Mapping

from tests.support.checkpoints import Checkpoints, labels_of

__all__ = ["Checker", "labels_of"]


class Checker(Checkpoints):
    """:class:`Checkpoints` called as ``check(expected, where)``; see ``failures`` and ``count``."""

    def __call__(self, expected: Mapping[str, str] | None, where: str) -> None:  # type: ignore[override]
        """Record the calling thread's labels at ``where`` and whether they are ``expected``."""
        super().__call__(where, expected)
