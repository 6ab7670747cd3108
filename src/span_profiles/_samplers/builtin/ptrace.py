"""Stop and resume single threads of another process with ``ptrace`` (Linux), for atomic reads.

A thread is stopped with ``PTRACE_SEIZE`` + ``PTRACE_INTERRUPT`` and released with
``PTRACE_DETACH``: it is never left traced between two samples, so a debugger can still attach in
between, and when the tracing process dies while a thread is stopped the kernel detaches it and it
runs on. ``PTRACE_SEIZE`` (unlike ``PTRACE_ATTACH``) sends no ``SIGSTOP``: nothing the app or its
parent can observe, except the time the thread was stopped.

A signal that arrives while a thread is stopped is held back by the kernel and handed to us
(a signal-delivery stop); :meth:`Pauser.resume` passes it on, so the app receives it.

Standard library only: this module runs in the sampler process.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterable

__all__ = ["PauseError", "Pauser"]

_PTRACE_DETACH = 17
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_EVENT_STOP = 128
_WALL = 0x40000000


class PauseError(OSError):
    """A thread could not be stopped (permission, seccomp, an existing tracer)."""


class Pauser:
    """Stops threads of one process and resumes them; raises :class:`PauseError` if not allowed."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._ptrace = libc.ptrace
        self._ptrace.restype = ctypes.c_long
        self._ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self._signals: dict[int, int] = {}
        """Stopped thread -> a signal that arrived meanwhile, to deliver on resume."""

    def _call(self, request: int, tid: int, data: int = 0) -> int:
        result: int = self._ptrace(request, tid, None, ctypes.c_void_p(data))
        return 0 if result == 0 else ctypes.get_errno()

    def pause(self, tids: Iterable[int], settle_ns: int = 200_000) -> tuple[list[int], list[int]]:
        """Stop each thread; return ``(stopped, pending)`` (gone threads are left out).

        Every interrupt is sent before the first wait. A thread that runs on a CPU stops within
        microseconds; one that waits for a CPU stops only once it gets one, but it cannot run a
        single instruction of the app before that: once interrupted it traps on its way back to
        user space. So the threads still not stopped after ``settle_ns`` are *pending*: frozen
        all the same, and not worth waiting for now (waiting would keep the stopped ones stopped
        until every runnable thread had its turn on a busy machine). :meth:`release` waits for
        them after the read.
        """
        seized: list[int] = []
        for tid in tids:
            error = self._call(_PTRACE_SEIZE, tid)
            if error == 0:
                error = self._call(_PTRACE_INTERRUPT, tid)
                seized.append(tid)
                if error:
                    # Seized but not interrupted: it will not stop; let it go.
                    self._call(_PTRACE_DETACH, seized.pop())
            if error == 3:  # ESRCH: the thread exited meanwhile
                continue
            if error:
                self.release(seized)
                raise PauseError(error, f"ptrace(thread {tid}): {os.strerror(error)}")
        stopped: list[int] = []
        waiting = list(seized)
        deadline = time.monotonic_ns() + settle_ns
        while waiting:
            for tid in list(waiting):
                state = self._wait(tid, block=False)
                if state is not None:
                    waiting.remove(tid)
                    if state:
                        stopped.append(tid)
            if not waiting or time.monotonic_ns() >= deadline:
                break
            os.sched_yield()
        return stopped, waiting

    def _wait(self, tid: int, block: bool) -> bool | None:
        """``True``: stopped; ``False``: gone; ``None``: not stopped yet (``block=False``)."""
        flags = _WALL if block else _WALL | os.WNOHANG
        while True:
            try:
                pid, status = os.waitpid(tid, flags)
            except ChildProcessError:
                return False  # it exited
            except InterruptedError:
                continue
            if pid == 0:
                return None
            if os.WIFSTOPPED(status):
                if status >> 16 == 0:
                    # A signal arrived first: the thread is stopped all the same.
                    self._signals[tid] = os.WSTOPSIG(status)
                return True
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                return False

    def release(self, pending: Iterable[int]) -> None:
        """Wait for interrupted threads to stop (when they next get a CPU), then resume them."""
        for tid in pending:
            if self._wait(tid, block=True):
                self.resume((tid,))

    def resume(self, tids: Iterable[int]) -> None:
        """Let stopped threads run on, delivering any signal held back meanwhile."""
        for tid in tids:
            self._call(_PTRACE_DETACH, tid, self._signals.pop(tid, 0))
