"""The sampler process: sample, attribute, encode, push; exit with the app.

Started by :mod:`.sampler` with :func:`.launch.command`. Its stdin is the control pipe: the
first line is the configuration (JSON), the second ``go`` (sent once the app allowed it to read
it); EOF means the app stops or is gone. Its stdout carries one JSON object per line for the app
to log (``ready``, ``error``, ``notice``, ``upload_failed``, ``stats``, ``flushed``).

Each tick (``sample_rate`` a second, never back-filled: a late tick is skipped, not repeated)
reads every thread on a CPU (:class:`.stacks.StackReader`) and drains the event ring into the
:class:`.attribution.Attributor`. Samples wait one second after their upload window closes, so
that events written meanwhile are in, then are attributed, aggregated into one pprof profile
per window and handed to an upload thread; uploads never delay the sampling. On EOF the
partial window is attributed and uploaded within ``shutdown_timeout``.

Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import select
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

from span_profiles._samplers.builtin import attribution, ring, stacks, wall
from span_profiles._samplers.pprof import Frame, ProfileBuilder, push_request
from span_profiles._samplers.push import Pusher, PushError

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_SETTLE_NS = 1_000_000_000
"""How long after its window a sample waits for late events before it is attributed."""
VERSION = "0.1.0"


def _emit(event: str, **fields: Any) -> None:
    try:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the app is gone


def _die_with_parent(ppid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != ppid:
        os._exit(0)  # the parent died before the request took effect


class _Uploader:
    """Pushes profiles on a thread of its own, in order; reports failures."""

    def __init__(self, pusher: Pusher, timeout: float) -> None:
        self.pusher = pusher
        self.timeout = timeout
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self.failures = 0
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            body = self.queue.get()
            if body is None:
                return
            try:
                self.pusher.push(body, self.timeout)
                self.sent += 1
            except PushError as exc:
                self.failures += 1
                _emit("upload_failed", detail=str(exc), first=self.failures == 1)

    def finish(self, deadline: float) -> bool:
        """Wait for the queued uploads until ``deadline`` (monotonic seconds)."""
        self.queue.put(None)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return not self.thread.is_alive()


class Sampler:
    """The sampling loop's state."""

    def __init__(self, config: dict[str, Any], reader: stacks.StackReader) -> None:
        self.config = config
        self.reader = reader
        self.ring = ring.RingReader(config["ring_fd"], config["ring_slots"])
        self.attributor = attribution.Attributor()
        self.period_ns = 1_000_000_000 // config["sample_rate"]
        self.interval_ns = config["upload_interval"] * 1_000_000_000
        self.start_mono = time.monotonic_ns()
        self.start_wall = time.time_ns()
        self.pending: dict[int, list[stacks.Sample]] = {}
        """Window index -> samples not attributed yet."""
        self.frames: dict[stacks.Stack, list[Frame]] = {}
        self.thread_names: dict[int, str] = {}
        self.series = {
            "__name__": "process_cpu",
            **config["tags"],
            "service_name": config["application_name"],
            "otel.scope.name": "span-profiles/builtin",
            "otel.scope.version": VERSION,
            "process.runtime.name": "cpython",
            "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        }
        self.uploader = _Uploader(
            Pusher(
                config["server_address"],
                config["basic_auth_username"],
                config["basic_auth_password"],
                config["tenant_id"],
                config["http_headers"],
                user_agent=f"span-profiles/{VERSION} builtin",
            ),
            timeout=10.0,
        )
        self.outcomes: Counter[str] = Counter()
        self.wall: wall.WallReader | None = None
        self.wall_series = {**self.series, "__name__": "wall"}
        if config.get("wall"):
            self.wall = wall.WallReader(
                reader,
                self.attributor,
                self.period_ns,
                lambda at: (at - self.start_mono) // self.interval_ns,
                self._frames,
                (("pid", str(config["ppid"])),) if config["report_pid"] else (),
                self.ring.publish_read,
            )

    def tick(self) -> None:
        """The events written since the last tick, then one sample of every thread on a CPU."""
        self.drain()
        now = time.monotonic_ns()
        samples = self.reader.read()
        for sample in samples:
            window = (sample.t0 - self.start_mono) // self.interval_ns
            self.pending.setdefault(window, []).append(sample)
        wall_reader = self.wall
        if wall_reader is not None:
            try:
                wall_reader.on_cpu(samples, now)
                if wall_reader.due(now):
                    self.drain()  # the moves up to the read's start
                    wall_reader.read(now)
            except ProcessLookupError:
                raise
            except Exception as exc:
                self._wall_failed(exc)

    def _wall_failed(self, exc: Exception) -> None:
        # A failure of the wall profile switches it off, not the CPU profile.
        self.wall = None
        _emit(
            "notice",
            detail=f"wall-clock profiles switched off after an error: {type(exc).__name__}: {exc}",
        )

    def drain(self) -> None:
        add = self.attributor.add
        watch = self.reader.watch
        wall = self.wall
        for event in self.ring.drain():
            add(event)
            if event is None:
                continue
            kind = event.kind
            if kind == ring.THREAD:
                watch(event.ident)  # a new worker thread: sampled from this tick on
                if wall is not None and event.aux:
                    wall.seen(event)
                    wall.moved(event)  # a job of a request starts: the request waits there now
            elif wall is not None:
                if kind == ring.RAN:
                    wall.moved(event)
                elif kind == ring.TASK and event.aux:
                    wall.seen(event)

    def flush_ready(self, now: int, final: bool = False) -> None:
        """Attribute and upload every window whose samples waited long enough (all if final)."""
        windows = set(self.pending)
        if self.wall is not None and final:
            self.drain()  # the last ends first: finish closes each request at its end
            try:
                self.wall.finish(now)
            except Exception as exc:
                self._wall_failed(exc)
        if self.wall is not None:
            windows.update(self.wall.builders)
        for window in sorted(windows):
            end = self.start_mono + (window + 1) * self.interval_ns
            if not final and now < end + _SETTLE_NS:
                break
            self.drain()
            samples = self.pending.pop(window, [])
            body = self._profile(window, samples, now if final else end)
            if body is not None:
                self.uploader.queue.put(body)
            if not final:
                self.attributor.forget_before(end)
            self._report()

    def _profile(self, window: int, samples: list[stacks.Sample], end: int) -> bytes | None:
        config = self.config
        builder = ProfileBuilder(("cpu", "nanoseconds"), self.period_ns)
        attribute = self.attributor.attribute
        keep_dropped = config.get("keep_dropped", False)
        for sample in samples:
            if sample.task == stacks.TORN:
                outcome = attribution.Outcome(None, "torn")
            else:
                outcome = attribute(sample.tid, sample.task, sample.t0, sample.t1)
            if outcome.labels is None:
                if not keep_dropped:
                    continue
                labels: attribution.Labels = (("span_profiles_dropped", outcome.reason),)
            else:
                labels = outcome.labels
            if config["report_pid"]:
                labels += (("pid", str(config["ppid"])),)
            if config["report_thread_id"]:
                labels += (("thread_id", str(sample.tid)),)
            if config["report_thread_name"]:
                labels += (("thread_name", self._thread_name(sample.tid)),)
            builder.add(self._frames(sample.stack), labels, self.period_ns)
        begin = self.start_mono + window * self.interval_ns
        time_nanos = self.start_wall + window * self.interval_ns
        duration = max(end - begin, 1)
        series: list[tuple[dict[str, str], list[bytes]]] = []
        if len(builder):
            series.append((self.series, [builder.encode(time_nanos, duration)]))
        if self.wall is not None:
            walls = [b.encode(time_nanos, duration) for b in self.wall.take(window)]
            if walls:
                series.append((self.wall_series, walls))
        if not series:
            return None
        return push_request(series)

    def _frames(self, stack: stacks.Stack) -> list[Frame]:
        frames = self.frames.get(stack)
        if frames is None:
            parts = [stacks.frame_parts(frame) for frame in stack]
            if not self.config["line_no"]:
                parts = [(filename, function, 0) for filename, function, _ in parts]
            frames = self.frames[stack] = parts
            if len(self.frames) > 100_000:
                self.frames.clear()
        return frames

    def _thread_name(self, tid: int) -> str:
        name = self.thread_names.get(tid)
        if name is None:
            try:
                with open(f"/proc/{self.config['ppid']}/task/{tid}/comm") as file:
                    name = file.read().strip()
            except OSError:
                name = ""
            self.thread_names[tid] = name
        return name

    def _report(self) -> None:
        read = self.reader.stats
        _emit(
            "stats",
            samples=read.samples,
            task_samples=read.task_reads,
            torn=read.torn,
            dropped_torn=read.dropped_torn,
            failed_reads=read.failed,
            paused_reads=read.paused,
            attribution=dict(self.attributor.counts),
            lost_events=self.ring.lost,
            uploads=self.uploader.sent,
            upload_failures=self.uploader.failures,
            cpu_seconds=round(time.process_time(), 3),
            wall=dict(self.wall.stats) if self.wall is not None else None,
        )


def run(config: dict[str, Any], control: int) -> int:
    """Sample until the control pipe closes or the parent is gone."""
    ppid = config["ppid"]
    try:
        reader = stacks.StackReader(
            ppid,
            pause=config["pause"],
            oncpu=config["oncpu"],
            keep_torn=config.get("keep_dropped", False),
        )
        reader.read()  # the first read proves that this process may be read
    except Exception as exc:
        permission = (
            isinstance(exc, PermissionError)
            or "ermission" in str(exc)
            or (isinstance(exc, OSError) and exc.errno in (1, 13))
        )
        _emit("error", detail=f"{type(exc).__name__}: {exc}", permission=permission)
        return 2
    sampler = Sampler(config, reader)
    _emit("ready", pid=os.getpid(), pause=reader.stats.pause_error == "" and config["pause"])
    pause_noticed = False
    period = sampler.period_ns
    next_tick = time.monotonic_ns()
    while True:
        now = time.monotonic_ns()
        if now >= next_tick:
            # Late ticks are skipped, not repeated: a burst of reads after a stall would count
            # one moment several times.
            next_tick += period * ((now - next_tick) // period + 1)
            if os.getppid() != ppid:
                break
            try:
                sampler.tick()
            except ProcessLookupError:
                break
            if reader.stats.pause_error and not pause_noticed:
                pause_noticed = True
                _emit(
                    "notice",
                    detail=f"threads cannot be paused ({reader.stats.pause_error}): reads are "
                    "unpaused, torn reads are dropped",
                )
            sampler.flush_ready(time.monotonic_ns())
            continue
        ready, _, _ = select.select([control], [], [], (next_tick - now) / 1e9)
        if ready and not os.read(control, 4096):
            break  # EOF: the app stops (or died)
    deadline = time.monotonic() + float(config["shutdown_timeout"])
    sampler.drain()
    sampler.flush_ready(time.monotonic_ns(), final=True)
    done = sampler.uploader.finish(deadline - 0.2)
    sampler._report()
    _emit("flushed", complete=done, uploads=sampler.uploader.sent)
    return 0


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    # A terminal's Ctrl-C reaches the whole process group; the app decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = sys.stdin.fileno()
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(control, 1)
        if not chunk:
            return 0
        line += chunk
    config = json.loads(line)
    _die_with_parent(config["ppid"])
    go = b""
    while go != b"go\n":
        chunk = os.read(control, 1)
        if not chunk:
            return 0
        go = (go + chunk)[-3:]
    return run(config, control)


def probe(argv: list[str]) -> int:
    """``span-profiles doctor``'s real read: can this process read (and pause) its parent?

    Waits for ``go`` on stdin (the parent names it for Yama first), then prints one JSON line.
    """
    ppid = os.getppid()
    _die_with_parent(ppid)
    if sys.stdin.readline().strip() != "go":
        return 0
    result: dict[str, Any] = {"ok": False, "pause": False, "detail": ""}
    try:
        reader = stacks.StackReader(ppid, pause=True)
        samples, _ = reader._read_once([ppid], last=True)
        result["ok"] = reader.stats.failed == 0
        result["pause"] = reader.stats.paused > 0 and not reader.stats.pause_error
        result["detail"] = reader.stats.pause_error or f"{len(samples)} thread(s) read"
    except Exception as exc:
        result["detail"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result), flush=True)
    return 0
