"""The checks of ``span-profiles doctor``: a setup before deploying it, with a fix for each problem.

They read the same settings the app would (environment, or ``--server-address`` and friends),
never start the agent and never change the process: CPU placement is predicted, not done.
Each check gives ``ok``, ``warning`` or ``problem``. The command (:mod:`span_profiles.cli.doctor`)
runs them, adds the local receiver's database, and prints them.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from span_profiles import _samplers
from span_profiles._samplers.base import Check
from span_profiles._samplers.pyroscope import check_agent, check_pinning
from span_profiles._settings import Settings

__all__ = ["Check", "check_agent", "check_pinning", "checks"]

SUPPORTED_PYTHONS = ((3, 10), (3, 15))
"""The oldest and newest supported ``(major, minor)``."""


def check_python(
    version: tuple[int, int] | None = None, free_threaded: bool | None = None
) -> Check:
    """The running Python is one of the supported versions, and not a free-threaded build."""
    current = version or (sys.version_info.major, sys.version_info.minor)
    if free_threaded is None:
        free_threaded = _samplers.FREE_THREADED
    (low_major, low), (high_major, high) = SUPPORTED_PYTHONS
    text = f"Python {current[0]}.{current[1]}"
    supported = f"{low_major}.{low}-{high_major}.{high}"
    if free_threaded:
        return Check(
            "python",
            "warning",
            f"{text} free-threaded is not tested (supported: {supported} with the GIL; "
            "no sampler runs there)",
            "use a build with the GIL (python3.X, not python3.Xt)",
        )
    if (low_major, low) <= current <= (high_major, high):
        return Check("python", "ok", f"{text} (supported: {supported})")
    return Check(
        "python", "warning", f"{text} is not tested (supported: {supported})", "use a tested Python"
    )


def _cgroup_dir(root: Path) -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            return root / path.lstrip("/")
    return None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> tuple[float | None, str]:
    """The cgroup v2 ``cpu.max`` quota in CPUs (``None``: no limit), and where it was read."""
    here = _cgroup_dir(root)
    candidates = [here, root] if here is not None else [root]
    for directory in candidates:
        if directory is None:
            continue
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None, str(directory / "cpu.max")
        return int(quota) / int(period), str(directory / "cpu.max")
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None, "no cpu.max found"
    return (quota_us / period_us if quota_us > 0 else None), str(root / "cpu")


def check_cpus() -> Check:
    """The CPUs this process may use (affinity, a cgroup cpuset) and the cgroup CPU quota."""
    if not hasattr(os, "sched_getaffinity"):
        return Check("cpus", "ok", f"{os.cpu_count()} CPUs (affinity is not visible here)")
    allowed = sorted(os.sched_getaffinity(0))
    quota, source = cgroup_cpu_limit()
    quota_text = "no CPU quota" if quota is None else f"a quota of {quota:g} CPUs ({source})"
    detail = f"{len(allowed)} of {os.cpu_count()} CPUs allowed ({allowed}); {quota_text}"
    if quota is not None and quota < 1:
        return Check(
            "cpus",
            "warning",
            detail + "; the sampler's CPU time counts against the quota",
            "allow at least one CPU, or lower sample_rate",
        )
    return Check("cpus", "ok", detail)


def check_server(settings: Settings, timeout: float = 2.0) -> Check:
    """A TCP connection to the server address opens."""
    parts = urlsplit(settings.server_address)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Check(
            "server",
            "problem",
            f"{settings.server_address} is not reachable: {exc}",
            "start a receiver (span-profiles serve) or set PYROSCOPE_SERVER_ADDRESS",
        )
    return Check("server", "ok", f"{settings.server_address} accepts connections")


def _service_name(environ: Mapping[str, str]) -> str | None:
    name = environ.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


def check_names(settings: Settings, environ: Mapping[str, str]) -> Check:
    """``service.name`` (from the OTel environment) and ``application_name`` agree."""
    service = _service_name(environ)
    name = settings.application_name
    if name is None and service is None:
        return Check(
            "names",
            "warning",
            "no service.name and no application_name: profiles go to unknown_service:python",
            "set OTEL_SERVICE_NAME (span-profiles uses it as application_name)",
        )
    if name is None:
        return Check("names", "ok", f"application_name follows service.name {service!r}")
    if service is not None and name.partition("{")[0] != service:
        return Check(
            "names",
            "problem",
            f"application_name {name!r} differs from service.name {service!r}: Grafana cannot "
            "link spans to profiles",
            "unset PYROSCOPE_APPLICATION_NAME or make it equal to OTEL_SERVICE_NAME",
        )
    return Check("names", "ok", f"application_name {name!r}")


def check_sampler(settings: Settings) -> Check:
    """Which sampler the app would start here, and why."""
    choice = _samplers.choose(settings.sampler)
    if choice.name is None:
        return Check(
            "sampler",
            "problem",
            choice.reason,
            "install pyroscope-io (CPython 3.10-3.14), or use CPython 3.14+ (built-in sampler)",
        )
    return Check("sampler", "ok", f"{choice.name} ({choice.reason})")


def checks(settings: Settings, environ: Mapping[str, str]) -> list[Check]:
    """Every check of the setup, in the order they are printed, the sampler's own checks after
    its line (the command adds the receiver's database: ``span_profiles.cli.doctor``)."""
    choice = _samplers.choose(settings.sampler)
    found = [check_sampler(settings), check_python(), check_cpus()]
    if choice.name is not None:
        found += _samplers.get(choice.name).doctor_checks(settings)
    else:
        found.append(check_agent())
    found += [check_server(settings), check_names(settings, environ)]
    return found
