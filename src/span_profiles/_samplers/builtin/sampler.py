"""The built-in sampler, app side: one sampler process per app process, and its lifetime.

Process model
    One sampler process per app process, started lazily after the last fork like the agent:
    each gunicorn or ``uvicorn --workers`` worker gets its own on its first request, a
    container's single process gets one. Per process rather than per host because a host-wide
    sampler would need to find every app process (pid namespaces, containers, workers that come
    and go), read other users' processes and learn every process's settings; a child reads its
    parent with the least privilege there is (same user; under Yama ``ptrace_scope=1`` the
    parent names it with ``PR_SET_PTRACER``), inherits the app's container, cgroup and seccomp
    profile, and is counted against the same CPU quota. The cost is a small interpreter per
    app process (see benchmarks/README.md for its CPU and memory).

Never outliving the app
    The sampler dies with the app however the app ends, SIGKILL included: it asks the kernel to
    kill it when its parent goes (``PR_SET_PDEATHSIG``; the parent here is the long-lived thread
    that spawned it), it exits when its control pipe (its stdin) reaches EOF, which happens when
    the app process is gone, and it checks ``getppid()`` on every tick.

Failure
    Whatever goes wrong (the sampler cannot read this process, it dies, it is killed) is logged
    once, and the sampler switches itself off: the sink stops writing events. Requests never
    wait for the sampler: events go into shared memory, the spawn happens on a thread of its own,
    and the exit flush is bounded by ``shutdown_timeout``.

Permissions (each gets one log line naming the cause, and a ``span-profiles doctor`` check):
    the same user; a dumpable process (``prctl(PR_SET_DUMPABLE)``, setuid/setcap binaries are
    not); Yama ``ptrace_scope`` 0 or 1 (1: the app names the sampler with ``PR_SET_PTRACER``),
    2 only with ``CAP_SYS_PTRACE``, 3 never; no seccomp filter denying ``process_vm_readv``
    (pausing also needs ``ptrace``; without it reads are unpaused and torn reads are dropped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from span_profiles._core import guard
from span_profiles._samplers.base import SamplerName
from span_profiles._samplers.builtin import launch, preflight
from span_profiles._samplers.builtin.ring import RingWriter
from span_profiles._samplers.builtin.sink import EventSink
from span_profiles._settings import Settings

__all__ = ["SAMPLER", "BuiltinSampler", "permission_hints"]

logger = logging.getLogger("span_profiles")

RING_SLOTS = 1 << 16
"""64 Ki records of 32 bytes (2 MiB shared): ~6 s of 10,000 label changes a second before the
sampler must have read them."""

_PR_SET_PTRACER = preflight.PR_SET_PTRACER
_prctl = preflight.prctl
permission_hints = preflight.permission_hints


@dataclass
class _Running:
    pid: int
    settings: Settings
    ring: RingWriter
    started: float
    process: subprocess.Popen[bytes] | None = None
    stdin: IO[bytes] | None = None
    spawned: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    failed: bool = False
    flushed: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class BuiltinSampler:
    """A child process that reads this one with CPython's ``_remote_debugging``."""

    name: SamplerName = "builtin"
    step_hooks = False
    places_threads = False
    gates_worker_threads = False

    def __init__(self) -> None:
        self.sink = EventSink()
        self.keep_dropped = False
        """Benchmarks only: upload the samples the sampler drops (torn reads, identities that
        changed during the read, lost events) with the label ``span_profiles_dropped=<why>``
        instead of leaving them out, to measure whether dropping biases the profile."""
        self.last_stats: dict[str, Any] = {}
        """The sampler process's last counters (samples, torn reads, attribution outcomes,
        lost events, uploads, its CPU seconds), kept after it stopped."""
        self._running: _Running | None = None
        self._lock = threading.Lock()

    def make_sink(self) -> EventSink:
        """The event sink (one per process, attached to the ring while sampling)."""
        return self.sink

    def _live(self) -> _Running | None:
        running = self._running
        return running if running is not None and running.pid == os.getpid() else None

    def running(self) -> bool:
        """Whether the sampler process was started by this process and has not failed."""
        running = self._live()
        return running is not None and not running.failed and not running.exited.is_set()

    def process_id(self) -> int | None:
        """The sampler process's pid (benchmarks measure its CPU and memory)."""
        running = self._live()
        if running is None or not running.spawned.wait(5) or running.process is None:
            return None
        return running.process.pid

    def start(self, settings: Settings, application_name: str, cpu_index: int | None) -> bool:
        """Create the ring, attach the sink and spawn the sampler on a thread of its own."""
        with self._lock:
            if self._live() is not None:
                return True
            try:
                ring = RingWriter(RING_SLOTS)
            except Exception as exc:
                guard.fail("starting the built-in sampler (no profiles)", exc)
                return False
            running = _Running(os.getpid(), settings, ring, time.monotonic())
            self._running = running
            self.sink.attach(ring, steps=settings.wall)
            config = {
                "ppid": os.getpid(),
                "ring_fd": ring.fd,
                "ring_slots": ring.slots,
                "application_name": application_name,
                "server_address": settings.server_address,
                "sample_rate": settings.sample_rate,
                "upload_interval": settings.upload_interval,
                "shutdown_timeout": settings.shutdown_timeout,
                "tags": dict(settings.tags),
                "basic_auth_username": settings.basic_auth_username,
                "basic_auth_password": settings.basic_auth_password,
                "tenant_id": settings.tenant_id,
                "http_headers": dict(settings.http_headers),
                "oncpu": settings.oncpu,
                "line_no": settings.line_no,
                "report_pid": settings.report_pid,
                "report_thread_id": settings.report_thread_id,
                "report_thread_name": settings.report_thread_name,
                "pause": settings.builtin_pause,
                "keep_dropped": self.keep_dropped,
                "wall": settings.wall,
                "python": list(sys.version_info[:2]),
            }
            # The thread that spawns the sampler is its "parent" for PR_SET_PDEATHSIG: it must
            # live as long as the process, so it is this daemon thread, not the caller's.
            threading.Thread(
                target=self._watch,
                args=(running, config),
                name="span-profiles-sampler",
                daemon=True,
            ).start()
            return True

    def _watch(self, running: _Running, config: dict[str, Any]) -> None:
        try:
            process = subprocess.Popen(
                launch.command("span_profiles._samplers.builtin.child:main"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(running.ring.fd,),
                close_fds=True,
            )
        except Exception as exc:
            running.failed = True
            running.spawned.set()
            running.exited.set()
            self._switch_off(running)
            guard.fail("starting the built-in sampler process (no profiles)", exc)
            return
        running.process = process
        assert process.stdin is not None
        assert process.stdout is not None
        running.stdin = process.stdin
        # Yama ptrace_scope=1 lets a process read only its descendants unless named here.
        with contextlib.suppress(OSError, AttributeError):
            _prctl(_PR_SET_PTRACER, process.pid)
        try:
            process.stdin.write(json.dumps(config).encode() + b"\ngo\n")
            process.stdin.flush()
        except OSError:
            pass  # it died already; its output says why
        running.spawned.set()
        output: list[str] = []
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._on_line(running, line, output)
        code = process.wait()
        running.exited.set()
        if running.stopping or running.failed:
            return
        running.failed = True
        self._switch_off(running)
        detail = "; ".join(output[-5:])
        guard.fail(
            "the built-in sampler",
            RuntimeError(
                f"the sampler process exited unexpectedly (status {code})"
                + (f": {detail}" if detail else "")
                + "; profiles are off in this process"
            ),
        )

    def _on_line(self, running: _Running, line: str, output: list[str]) -> None:
        try:
            message = json.loads(line)
            kind = message.pop("event")
        except (ValueError, AttributeError, KeyError):
            output.append(line)  # an interpreter error; kept for the exit message
            return
        if kind == "ready":
            logger.debug("span-profiles: built-in sampler ready: %s", message)
        elif kind == "error":
            running.failed = True
            self._switch_off(running)
            hints = permission_hints() if message.get("permission") else []
            logger.error(
                "span-profiles: the built-in sampler cannot read this process (%s)%s; profiles "
                "are off in this process. Run `span-profiles doctor` to check the setup.",
                message.get("detail", "unknown error"),
                "; likely cause: " + "; ".join(hints) if hints else "",
            )
        elif kind == "notice":
            logger.info("span-profiles: built-in sampler: %s", message.get("detail"))
        elif kind == "upload_failed":
            logger.warning(
                "span-profiles: uploading profiles to %s failed: %s (that window is dropped; "
                "further failures are logged at DEBUG)",
                running.settings.server_address,
                message.get("detail"),
            ) if message.get("first") else logger.debug(
                "span-profiles: upload failed: %s", message.get("detail")
            )
        elif kind == "stats":
            running.stats = message
            self.last_stats = message
            logger.debug("span-profiles: built-in sampler: %s", message)
        elif kind == "flushed":
            running.flushed = message

    def _switch_off(self, running: _Running) -> None:
        if self._running is running:
            self.sink.detach()

    def stop(self, timeout: float) -> bool:
        """Close the control pipe (the sampler uploads what it holds and exits); wait for it at
        most ``timeout`` seconds."""
        with self._lock:
            running = self._live()
            if running is None:
                return False
            self._running = None
        running.stopping = True
        self.sink.detach()
        begun = time.monotonic()
        deadline = begun + timeout
        running.spawned.wait(max(0.0, deadline - time.monotonic()))
        if running.stdin is not None:
            with contextlib.suppress(OSError):
                running.stdin.close()
        exited = running.exited.wait(max(0.0, deadline - time.monotonic()))
        if exited and running.flushed.get("complete", True) is not False:
            logger.debug(
                "span-profiles: built-in sampler stopped, flush took %.2f s (%s)",
                time.monotonic() - begun,
                running.flushed,
            )
        elif not running.failed:
            logger.warning(
                "span-profiles: the built-in sampler's exit flush to %s did not finish within "
                "shutdown_timeout=%g s; dropped what was not uploaded yet (at most the last "
                "%d s)",
                running.settings.server_address,
                timeout,
                running.settings.upload_interval + 1,
            )
        if not exited and running.process is not None:
            running.process.kill()
        running.ring.close()
        return True

    def doctor_checks(self, settings: Settings) -> list[Any]:
        """Interpreter, permissions, and a real read of a process by a sampler child."""
        from span_profiles._samplers.builtin import checks

        return checks.all_checks(settings)


SAMPLER = BuiltinSampler()
"""The process's built-in sampler."""
