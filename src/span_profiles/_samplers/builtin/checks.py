"""``span-profiles doctor`` checks for the built-in sampler.

Besides the interpreter and the kernel settings it looks at, the doctor does what the sampler
does: it starts a sampler process the same way (same interpreter, same launch, ``PR_SET_PTRACER``
for Yama) and lets it read and pause the doctor's own process. Run inside the app's container
(same user, same seccomp profile), that answers whether the sampler can read the app.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import TYPE_CHECKING

from span_profiles._samplers.base import Check, builtin_usable
from span_profiles._samplers.builtin import launch, preflight

if TYPE_CHECKING:
    from span_profiles._settings import Settings

__all__ = ["all_checks", "check_interpreter", "check_read", "check_yama"]


def check_interpreter() -> Check:
    """CPython 3.14+, GIL build, Linux, ``_remote_debugging`` present."""

    ok, why = builtin_usable()
    if ok:
        return Check("builtin", "ok", f"the built-in sampler can run here ({why})")
    return Check("builtin", "problem", why, "use CPython 3.14+ on Linux, or sampler=pyroscope")


def check_yama(path: str = preflight.YAMA) -> Check:
    """Yama ``ptrace_scope``: 0 and 1 work (1 through ``PR_SET_PTRACER``), 2 needs
    ``CAP_SYS_PTRACE``, 3 never."""

    scope = preflight.yama_scope(path)
    if scope is None:
        return Check("yama", "ok", "no Yama ptrace restriction")
    if scope <= 1:
        detail = "the app names its sampler with PR_SET_PTRACER" if scope == 1 else "classic"
        return Check("yama", "ok", f"ptrace_scope={scope} ({detail})")
    fix = (
        "run with CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=1"
        if scope == 2
        else "kernel.yama.ptrace_scope=3 cannot be lowered without a reboot; use sampler=pyroscope"
    )
    return Check("yama", "problem", f"ptrace_scope={scope}: the sampler cannot read the app", fix)


def check_read(timeout: float = 20.0) -> Check:
    """A sampler process reads (and pauses) this process, as it would the app."""

    try:
        process = subprocess.Popen(
            launch.command("span_profiles._samplers.builtin.child:probe"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        return Check("read", "problem", f"cannot start a sampler process: {exc}")
    with contextlib.suppress(OSError, AttributeError):
        preflight.prctl(preflight.PR_SET_PTRACER, process.pid)
    try:
        output, _ = process.communicate(b"go\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return Check("read", "problem", "the sampler process did not answer")
    try:
        result = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Check("read", "problem", f"the sampler process failed: {output.decode()[-300:]}")
    if not result.get("ok"):
        hints = preflight.permission_hints()
        return Check(
            "read",
            "problem",
            f"a sampler process cannot read this process: {result.get('detail')}"
            + ("; " + "; ".join(hints) if hints else ""),
            "allow process_vm_readv (seccomp), keep the app dumpable, same user as the app",
        )
    if not result.get("pause"):
        return Check(
            "read",
            "warning",
            f"reads work, pausing does not ({result.get('detail')}): reads are unpaused and "
            "torn reads are dropped (more at short task steps)",
            "allow ptrace (seccomp: the ptrace syscall) for exact samples of short steps",
        )
    return Check("read", "ok", "a sampler process reads and pauses this process")


def all_checks(settings: Settings) -> list[Check]:
    """Every check for the built-in sampler (the read only where it can run)."""
    found = [check_interpreter()]
    if found[0].status == "ok":
        found += [check_yama(), check_read()]
    return found
