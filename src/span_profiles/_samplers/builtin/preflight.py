"""What lets a sampler process read this one: checked from inside, without starting it.

Used by ``sampler="auto"`` on CPython 3.14 (prefer the built-in sampler only where it can read
the app), by the log line that explains a failed read, and by ``span-profiles doctor``.
Standard library only.
"""

from __future__ import annotations

import ctypes
import os

__all__ = [
    "PR_SET_PTRACER",
    "YAMA",
    "dumpable",
    "permission_hints",
    "prctl",
    "readable",
    "seccomp_mode",
    "yama_scope",
]

YAMA = "/proc/sys/kernel/yama/ptrace_scope"

PR_SET_PTRACER = 0x59616D61
"""``prctl`` option: let one process (the sampler) trace this one under Yama's scope 1."""

_PR_GET_DUMPABLE = 3
_CAP_SYS_PTRACE = 19


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int = 0) -> int:
    """``prctl(option, arg)``; -1 with ``errno`` set on failure."""
    return int(_libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0))


def yama_scope(path: str = YAMA) -> int | None:
    """Yama's ``ptrace_scope`` (``None``: no Yama)."""
    try:
        with open(path) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def _status_field(name: str, status: str = "/proc/self/status") -> str | None:
    try:
        with open(status) as file:
            for line in file:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def seccomp_mode() -> int:
    """This process's seccomp mode (0 off, 1 strict, 2 filter), inherited by the sampler."""
    value = _status_field("Seccomp")
    return int(value) if value is not None and value.isdigit() else 0


def cap_sys_ptrace() -> bool:
    """Whether this process (and so the sampler it starts) has ``CAP_SYS_PTRACE``."""
    value = _status_field("CapEff")
    try:
        return value is not None and bool(int(value, 16) >> _CAP_SYS_PTRACE & 1)
    except ValueError:
        return False


def dumpable() -> bool:
    """Whether another process of this user may read this one (``PR_GET_DUMPABLE``)."""
    try:
        return int(_libc().prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)) != 0
    except (OSError, AttributeError):
        return True


def _process_vm_readv_allowed() -> bool:
    """Whether ``process_vm_readv`` is allowed at all (a seccomp filter may deny it): tried on
    this process's own memory, which needs no permission."""

    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    libc = _libc()
    call = getattr(libc, "process_vm_readv", None)
    if call is None:
        return True
    source = ctypes.create_string_buffer(b"span-profiles", 16)
    target = ctypes.create_string_buffer(16)
    local = IOVec(ctypes.cast(target, ctypes.c_void_p), 16)
    remote = IOVec(ctypes.cast(source, ctypes.c_void_p), 16)
    call.restype = ctypes.c_ssize_t
    done = call(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return bool(done == 16 and target.raw[:13] == b"span-profiles")


def permission_hints() -> list[str]:
    """What in this process's setup keeps (or may keep) a sampler process from reading it."""
    hints = []
    privileged = cap_sys_ptrace()
    if not dumpable() and not privileged:
        hints.append(
            "the process is not dumpable (prctl(PR_SET_DUMPABLE, 0), or a setuid/setcap "
            "binary): only a sampler with CAP_SYS_PTRACE may read it"
        )
    scope = yama_scope()
    if scope is not None and (scope == 3 or (scope == 2 and not privileged)):
        hints.append(
            f"Yama ptrace_scope is {scope} ({YAMA}): "
            + ("only CAP_SYS_PTRACE may read processes" if scope == 2 else "nobody may")
        )
    if not _process_vm_readv_allowed():
        hints.append("a seccomp filter denies process_vm_readv (allow it in the seccomp profile)")
    elif seccomp_mode() == 2 and not hints:
        hints.append("a seccomp filter is active (it may deny ptrace or process_vm_readv)")
    return hints


def readable() -> tuple[bool, str]:
    """Whether nothing seen from inside keeps a sampler process from reading this one."""
    hints = [hint for hint in permission_hints() if not hint.startswith("a seccomp filter is")]
    if hints:
        return False, "; ".join(hints)
    return True, "this process can be read by a sampler process"
