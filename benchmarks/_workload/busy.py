"""The busy-machine mix of issue 15 for ``benchmarks/fidelity.py --busy``, and what it measures.

:class:`BusyMix` starts, beside the server a fidelity run measures, what broke the e2e tests on a
busy machine: two other span-profiles apps under load, one a soak with 32 clients, the other a
pair of apps pinned with ``taskset`` to one CPU (their clients too), each group pushing profiles to
a receiver of its own (``span-profiles serve`` processes), and a slow HTTP server (answers after
20-80 ms) polled by 16 connections. Every process runs in its own session, is bounded in time and
is killed on the way out.

:func:`thread_stats` and :func:`machine_stats` read what the kernel says about scheduling, for the
measured server's agent threads and loop thread (``/proc/<pid>/task/<tid>/schedstat``: CPU time,
run-queue wait, time slices; ``sched``: involuntary switches, migrations) and the machine (load,
CPU pressure, context switches, interrupts).

``python -m benchmarks._workload.busy load PORT CLIENTS QUERY SECONDS`` drives a workload app;
``... slow-server PORT`` serves slowly; ``... slow-clients PORT CLIENTS SECONDS`` polls it;
``... mix SECONDS`` runs the whole mix on its own for that long (or until SIGTERM/SIGINT), e.g. to
run the test suite beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks._workload.harness import ROOT, Connection, Server, run_load

SOAK_CLIENTS = 32
PAIR_CLIENTS = 6
SLOW_CLIENTS = 16
SOAK_QUERY = "slice_us=500&n=4"
PAIR_QUERY = "slice_us=2000&n=2"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """Children started meanwhile inherit ``cpus`` (this thread's mask is restored after)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class BusyMix:
    """The neighbours of a measured server; use as a context manager."""

    workdir: Path
    pinned_cpu: int = 0
    """The CPU the pair of apps and their clients are pinned to."""
    seconds: float = 900.0
    """Upper bound on every load process's life."""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"busy-{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def _receiver(self, name: str) -> str:
        port = _free_port()
        self._spawn(
            [
                *(sys.executable, "-m", "span_profiles.receiver", "serve", "-q"),
                *("--port", str(port), "--db", str(self.workdir / f"busy-{name}.db")),
            ],
            f"receiver-{name}",
        )
        return f"http://127.0.0.1:{port}"

    def _app(self, receiver: str, service: str) -> Server:
        env = {
            "PYROSCOPE_SERVER_ADDRESS": receiver,
            "OTEL_SERVICE_NAME": service,
            "SP_BENCH_LABELS": "ours",
            "SPAN_PROFILES_PIN_CPU": "auto",
        }
        server = Server(env)
        self.servers.append(server)
        server.start(self.workdir / f"busy-{service}.stderr", timeout=60)
        return server

    def _load(self, port: int, clients: int, query: str, name: str, cpu: int | None) -> None:
        argv = [sys.executable, "-m", "benchmarks._workload.busy", "load", str(port)]
        argv += [str(clients), query, str(self.seconds)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self._spawn(argv, name)

    def __enter__(self) -> BusyMix:
        try:
            soak_receiver = self._receiver("soak")
            pair_receiver = self._receiver("pair")
            slow_port = _free_port()
            busy = [sys.executable, "-m", "benchmarks._workload.busy"]
            self._spawn([*busy, "slow-server", str(slow_port)], "slow-server")
            time.sleep(1.0)  # the receivers and the slow server bind their ports
            soak = self._app(soak_receiver, "busy-soak")
            self._load(soak.port, SOAK_CLIENTS, SOAK_QUERY, "soak-load", None)
            for index in range(2):
                with _affinity({self.pinned_cpu}):
                    app = self._app(pair_receiver, f"busy-pair-{index}")
                self._load(
                    app.port, PAIR_CLIENTS, PAIR_QUERY, f"pair-load-{index}", self.pinned_cpu
                )
            self._spawn(
                [*busy, "slow-clients", str(slow_port), str(SLOW_CLIENTS), str(self.seconds)],
                "slow-clients",
            )
            time.sleep(3.0)  # let the load settle
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every neighbour (servers first, so their agents stop pushing)."""
        for server in self.servers:
            server.kill()
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.servers.clear()
        self.processes.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- what the kernel says -------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def thread_stats(pid: int, tids: list[int]) -> dict[int, dict[str, int]]:
    """Per thread: ``cpu_ns``, ``wait_ns`` (run-queue), ``slices``, ``involuntary``,
    ``voluntary``, ``migrations`` (cumulative) and ``cpu`` (where it last ran)."""
    result = {}
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        schedstat = _read(f"{base}/schedstat").split()
        if len(schedstat) < 3:
            continue
        stats = {
            "cpu_ns": int(schedstat[0]),
            "wait_ns": int(schedstat[1]),
            "slices": int(schedstat[2]),
        }
        for line in _read(f"{base}/sched").splitlines():
            name, _, value = line.partition(":")
            key = {
                "nr_involuntary_switches": "involuntary",
                "nr_voluntary_switches": "voluntary",
                "se.nr_migrations": "migrations",
            }.get(name.strip())
            if key:
                stats[key] = int(float(value))
        stat = _read(f"{base}/stat")
        if stat:
            stats["cpu"] = int(stat.rsplit(")", 1)[1].split()[36])
        result[tid] = stats
    return result


PRIORITIES = ("default", "agent-nice", "agent-fifo", "loop-nice")
"""Scheduling of a measured server's pinned threads (``fidelity.py --busy --priority``): as
started; the agent's threads at nice -10; the agent's threads ``SCHED_FIFO`` priority 1; the loop
thread at nice +5. All but ``loop-nice`` need ``CAP_SYS_NICE`` (root)."""


def set_priority(priority: str, agent: list[int], loop: list[int]) -> None:
    """Apply one of :data:`PRIORITIES` to the agent's threads and the loop thread (by tid)."""
    for tid in agent if priority.startswith("agent-") else loop if priority == "loop-nice" else []:
        with contextlib.suppress(ProcessLookupError):
            if priority == "agent-nice":
                os.setpriority(os.PRIO_PROCESS, tid, -10)
            elif priority == "agent-fifo":
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
            elif priority == "loop-nice":
                os.setpriority(os.PRIO_PROCESS, tid, 5)


def pinned_threads(pid: int, cpu: int) -> list[int]:
    """The threads of ``pid`` allowed on ``cpu`` only."""
    result = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines():
            if line.startswith("Cpus_allowed_list:") and line.split(":", 1)[1].strip() == str(cpu):
                result.append(int(tid))
    return sorted(result)


def thread_deltas(
    before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]
) -> dict[int, dict[str, int]]:
    """``after - before`` per thread (``cpu``: where it ran last)."""
    return {
        tid: {
            key: value - before[tid].get(key, 0) if key != "cpu" else value
            for key, value in stats.items()
        }
        for tid, stats in after.items()
        if tid in before
    }


def machine_stats() -> dict[str, float]:
    """Cumulative context switches and interrupts, CPU pressure (µs stalled) and the load."""
    stats: dict[str, float] = {}
    for line in _read("/proc/stat").splitlines():
        name, _, rest = line.partition(" ")
        if name in ("ctxt", "intr", "procs_running"):
            stats[name] = float(rest.split()[0])
    for line in _read("/proc/pressure/cpu").splitlines():
        if line.startswith("some"):
            stats["cpu_pressure_us"] = float(line.rsplit("total=", 1)[1])
    stats["load1"] = float(_read("/proc/loadavg").split()[0] or 0)
    return stats


def machine_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-second rates of the cumulative counters; the load and runnable count at the end."""
    seconds = max(after["time"] - before["time"], 1e-9)
    result = {"seconds": round(seconds, 2), "load1": after.get("load1", 0.0)}
    for key in ("ctxt", "intr"):
        if key in before and key in after:
            result[f"{key}_per_s"] = round((after[key] - before[key]) / seconds)
    if "cpu_pressure_us" in before and "cpu_pressure_us" in after:
        stalled = after["cpu_pressure_us"] - before["cpu_pressure_us"]
        result["cpu_pressure"] = round(stalled / 1e6 / seconds, 3)
    return result


def snapshot() -> dict[str, float]:
    """:func:`machine_stats` with the time it was taken."""
    return {**machine_stats(), "time": time.monotonic()}


# -- a scheduler trace of the pinned CPU ------------------------------------------------------------


class SchedTrace:
    """``perf record`` of ``sched_switch``/``sched_wakeup`` on one CPU, read per sampling period.

    Needs ``perf`` and a mounted tracefs (root); :meth:`start` returns ``None`` without them.
    """

    def __init__(self, cpu: int, seconds: float, out: Path) -> None:
        self.cpu = cpu
        self.seconds = seconds
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SchedTrace | None:
        """Start recording now, for ``seconds``."""
        import shutil

        if shutil.which("perf") is None or not os.path.exists("/sys/kernel/tracing/events/sched"):
            return None
        self.process = subprocess.Popen(
            [
                *("perf", "record", "-q", "-o", str(self.out)),
                *("-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-C", str(self.cpu)),
                *("--", "sleep", str(self.seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def read(self, loop_tid: int, process_tids: set[int]) -> dict[str, Any]:
        """Wait for the recording; count what happened around each of the sampler's stack reads.

        The sampler is the process's thread that most often wakes another of its threads (the
        labeller) while running. A period starts when the sampler is switched in after sleeping
        and ends when it wakes the labeller (stack read done). Counted: periods; stack reads
        preempted (sampler switched out runnable); stack reads during which the loop thread ran;
        hand-offs after which the loop ran before the labeller; who preempted the sampler.
        """
        if self.process is None:
            return {}
        self.process.wait(self.seconds + 30)
        done = subprocess.run(
            ["perf", "script", "-i", str(self.out), "-F", "time,event,trace"],
            capture_output=True,
            text=True,
            check=False,
        )
        return analyze_sched(done.stdout, loop_tid, process_tids)


_SWITCH = re.compile(
    r"prev_comm=(.*) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+) "
)
_WAKEUP = re.compile(r"sched_wakeup: comm=.* pid=(\d+) prio")


def analyze_sched(text: str, loop_tid: int, process_tids: set[int]) -> dict[str, Any]:
    """See :meth:`SchedTrace.read`; ``text`` is ``perf script -F time,event,trace`` output."""
    events: list[tuple[float, int, str, int]] = []  # (time, prev or -1 for a wakeup, state, next)
    comms: dict[int, str] = {}
    for line in text.splitlines():
        head = line.split(":", 1)[0].split()
        if not head:
            continue
        try:
            when = float(head[-1])
        except ValueError:
            continue
        switch = _SWITCH.search(line)
        if switch:
            comms[int(switch.group(2))] = switch.group(1)
            comms[int(switch.group(5))] = switch.group(4)
            events.append((when, int(switch.group(2)), switch.group(3), int(switch.group(5))))
            continue
        wakeup = _WAKEUP.search(line)
        if wakeup:
            events.append((when, -1, "", int(wakeup.group(1))))
    wakers: Counter[tuple[int, int]] = Counter()
    current = None
    for _, prev, _, target in events:
        if prev != -1:
            current = target
        elif current in process_tids and current != loop_tid and target in process_tids:
            wakers[(current, target)] += 1
    if not wakers:
        return {"error": "no sampler hand-off found in the trace"}
    (sampler, labeller), _ = wakers.most_common(1)[0]
    counts: Counter[str] = Counter()
    preemptors: Counter[str] = Counter()
    reading = handed_off = False
    sampler_state = "S"
    loop_since: float | None = None
    loop_in_read = loop_after_handoff = 0.0
    current = None
    for when, prev, state, target in events:
        if prev == -1:
            if target == labeller and current == sampler:
                if reading:
                    counts["periods"] += 1
                    if loop_in_read:
                        counts["loop ran during a stack read"] += 1
                    reading = False
                if not handed_off:
                    handed_off, loop_after_handoff = True, 0.0
            continue
        if prev == loop_tid and loop_since is not None:
            if reading:
                loop_in_read += when - loop_since
            if handed_off:
                loop_after_handoff += when - loop_since
            loop_since = None
        if target == loop_tid:
            loop_since = when
        if prev == sampler:
            sampler_state = state
            if reading and state.startswith("R"):
                counts["stack reads preempted"] += 1
                preemptors["loop" if target == loop_tid else comms.get(target, "?")] += 1
        if target == labeller and handed_off:
            handed_off = False
            if loop_after_handoff:
                counts["loop ran between hand-off and label read"] += 1
        if target == sampler and not sampler_state.startswith("R") and not reading:
            reading, loop_in_read = True, 0.0
        current = target
    return {
        "sampler": sampler,
        "labeller": labeller,
        **counts,
        "preempted_by": dict(preemptors.most_common(6)),
    }


# -- the helper processes -------------------------------------------------------------------------


async def _slow_server(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = random.Random()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(rng.uniform(0.02, 0.08))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _slow_clients(port: int, clients: int, seconds: float) -> None:
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        connection = await Connection.open(port)
        try:
            while time.monotonic() < stop_at:
                await connection.get("/")
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))


def main(argv: list[str]) -> int:
    """The helper processes of :class:`BusyMix` (see the module docstring)."""
    command, args = argv[0], argv[1:]
    if command == "load":
        port, clients, query, seconds = int(args[0]), int(args[1]), args[2], float(args[3])

        def path(endpoint: str, rid: int) -> str:
            return f"/slices/{endpoint}?{query}"

        run_load(port, path, concurrency=clients, duration=seconds, unique=False)
    elif command == "slow-server":
        asyncio.run(_slow_server(int(args[0])))
    elif command == "slow-clients":
        asyncio.run(_slow_clients(int(args[0]), int(args[1]), float(args[2])))
    elif command == "mix":
        import tempfile

        seconds = float(args[0])
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with (
            tempfile.TemporaryDirectory(prefix="span-profiles-busy-") as tmp,
            BusyMix(Path(tmp), seconds=seconds),
        ):
            print(f"busy mix up for {seconds:g} s", file=sys.stderr, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(seconds)
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


def summarize(deltas: dict[int, dict[str, int]], tids: dict[str, list[int]]) -> dict[str, Any]:
    """Sum the per-thread deltas per role (``loop``, ``agent``) and derive per-slice waits."""
    result: dict[str, Any] = {}
    for role, role_tids in tids.items():
        rows = [deltas[tid] for tid in role_tids if tid in deltas]
        if not rows:
            continue
        total = {key: sum(row.get(key, 0) for row in rows) for key in rows[0] if key != "cpu"}
        slices = max(total.get("slices", 0), 1)
        result[role] = {
            **total,
            "wait_per_slice_us": round(total.get("wait_ns", 0) / slices / 1000, 1),
            "cpu_per_slice_us": round(total.get("cpu_ns", 0) / slices / 1000, 1),
            "cpus": sorted({row.get("cpu", -1) for row in rows}),
        }
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
