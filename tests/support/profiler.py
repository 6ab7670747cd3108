"""A stand-in for the pyroscope-io agent module, for the profiler tests."""

from __future__ import annotations

import os
import threading
import types
from typing import Any


class FakeAgent(types.ModuleType):
    """Stands in for ``pyroscope``: records calls; ``configure`` starts a short-lived thread.

    The thread records the CPU affinity it was born with, which is what pinning must control.
    """

    def __init__(self) -> None:
        super().__init__("pyroscope")
        self.configure_calls: list[dict[str, Any]] = []
        self.shutdown_calls = 0
        self.result: bool = True
        self.error: BaseException | None = None
        self.thread_affinity: set[int] | None = None

    def configure(self, **kwargs: Any) -> bool:
        self.configure_calls.append(kwargs)
        if self.error is not None:
            raise self.error

        def record() -> None:
            self.thread_affinity = os.sched_getaffinity(0)

        thread = threading.Thread(target=record)
        thread.start()
        thread.join()
        return self.result

    def shutdown(self) -> bool:
        self.shutdown_calls += 1
        return True

    def add_thread_tag(self, key: str, value: str) -> None:
        pass

    def remove_thread_tag(self, key: str, value: str) -> None:
        pass
