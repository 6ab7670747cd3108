"""CPU burnt on purpose by the e2e test apps, so that the sampler sees where it was spent."""

from __future__ import annotations

import time


def burn_cpu(ms: float) -> int:
    """Spend ``ms`` milliseconds of the calling thread's CPU time (not wall time).

    Call it from a function with a telling name: the profile shows both frames.
    """
    end = time.thread_time() + ms / 1000
    total = 0
    while time.thread_time() < end:
        for i in range(200):
            total += i * i
    return total
