"""``span-profiles doctor``: each check on real inputs (a live receiver, files, the environment)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from span_profiles import _doctor
from span_profiles._settings import Settings
from span_profiles.cli import main
from span_profiles.cli.doctor import check_receiver_db
from span_profiles.receiver import ProfileStore, Receiver, start_receiver_in_thread


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A live receiver on a free loopback port."""
    started = start_receiver_in_thread(port=0, db_path=tmp_path / "live.db")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No agent or OTel settings from the outer environment."""
    for name in list(os.environ):
        if name.startswith(("PYROSCOPE_", "SPAN_PROFILES_", "OTEL_")):
            monkeypatch.delenv(name)
    # The agent's checks (tests/samplers has the built-in sampler's).
    monkeypatch.setenv("SPAN_PROFILES_SAMPLER", "pyroscope")


def run_json(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``span-profiles doctor --json ARGV``; the exit status and the checks by name."""
    status = main(["doctor", "--json", *argv])
    checks = json.loads(capsys.readouterr().out)
    return status, {check["name"]: check for check in checks}


@pytest.mark.e2e
@pytest.mark.agent
def test_a_good_setup_passes(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reachable server and agreeing names: no problem, exit status 0."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    status, checks = run_json(
        capsys, "--server-address", receiver.url, "--db", str(receiver.db_path)
    )
    assert status == 0, checks
    assert checks["server"]["status"] == "ok"
    assert checks["names"] == {
        "name": "names",
        "status": "ok",
        "detail": "application_name follows service.name 'shop'",
        "fix": "",
    }
    assert checks["agent"]["detail"].startswith("pyroscope-io 1.")
    assert {"python", "cpus", "pinning"} <= set(checks)


def test_unreachable_server_and_differing_names_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed port and application_name != service.name: two problems with fixes, status 1."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=shop")
    status, checks = run_json(
        capsys,
        "--server-address", "http://127.0.0.1:9",
        "--application-name", "checkout",
        "--db", str(tmp_path / "absent.db"),
    )  # fmt: skip
    assert status == 1
    assert checks["server"]["status"] == "problem"
    assert "span-profiles serve" in checks["server"]["fix"]
    assert checks["names"]["status"] == "problem"
    assert "'checkout' differs from service.name 'shop'" in checks["names"]["detail"]
    assert "receiver-db" not in checks  # no local database: nothing to report


def test_pin_off_is_reported_with_its_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """pin_cpu=off is a warning naming the fidelity it costs."""
    _, checks = run_json(capsys, "--pin-cpu", "off", "--server-address", "http://127.0.0.1:9")
    assert checks["pinning"]["status"] == "warning"
    assert "94 %" in checks["pinning"]["detail"]


def test_text_output_prints_a_fix_under_each_problem(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: one line per check, the fix on the next line."""
    assert main(["doctor", "--server-address", "http://127.0.0.1:9"]) == 1
    lines = capsys.readouterr().out.splitlines()
    server = next(i for i, line in enumerate(lines) if line.startswith("problem  server"))
    assert "fix: start a receiver" in lines[server + 1]


def test_invalid_setting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad server address is a settings error naming the argument, status 2."""
    assert main(["doctor", "--server-address", "ftp://x"]) == 2
    assert "server_address" in capsys.readouterr().err


def test_python_outside_the_tested_range_is_a_warning() -> None:
    """3.9 and 3.16 are flagged; 3.10 to 3.15 are fine; a free-threaded build is flagged."""
    assert _doctor.check_python((3, 9), free_threaded=False).status == "warning"
    assert _doctor.check_python((3, 16), free_threaded=False).status == "warning"
    for minor in range(10, 16):
        assert _doctor.check_python((3, minor), free_threaded=False).status == "ok", minor
    threaded = _doctor.check_python((3, 14), free_threaded=True)
    assert threaded.status == "warning"
    assert "free-threaded" in threaded.detail
    assert "GIL" in threaded.fix


@pytest.mark.parametrize(
    ("python", "free_threaded", "said"),
    [
        ((3, 15), False, "pyroscope-io has no build for Python 3.15"),
        ((3, 14), True, "pyroscope-io has no build for free-threaded Python 3.14t"),
        ((3, 12), False, "pyroscope-io is not installed"),
    ],
)
def test_no_sampler_is_a_problem_that_says_why_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
    python: tuple[int, int],
    free_threaded: bool,
    said: str,
) -> None:
    """Without pyroscope-io the agent check is a problem; where it has no build for this Python
    it says so and points to a Python that has one, rather than to pip."""
    from importlib import metadata

    from span_profiles import _samplers

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.setitem(sys.modules, "pyroscope", None)
    monkeypatch.setattr(_samplers.base, "PYTHON", python)
    monkeypatch.setattr(_samplers.base, "FREE_THREADED", free_threaded)
    check = _doctor.check_agent()
    assert check.status == "problem"
    assert check.detail.startswith(f"no sampler: {said}")
    if python == (3, 12):
        assert check.fix == "pip install 'span-profiles[pyroscope]'"
    else:
        assert check.fix.startswith("run on CPython 3.10-3.14 with the GIL")
        assert "built-in sampler" in check.fix


@pytest.mark.parametrize(
    ("content", "expected"),
    [("50000 100000\n", 0.5), ("max 100000\n", None), ("200000 100000", 2.0)],
)
def test_cgroup_cpu_max_is_read(tmp_path: Path, content: str, expected: float | None) -> None:
    """cgroup v2 ``cpu.max``: a quota in CPUs, or no limit."""
    (tmp_path / "cpu.max").write_text(content)
    assert _doctor.cgroup_cpu_limit(tmp_path)[0] == expected


def test_receiver_db_retention_is_reported(tmp_path: Path) -> None:
    """An existing database: its retention limits and what it holds, read without writing."""
    db = tmp_path / "profiles.db"
    ProfileStore(db).close()
    before = db.stat().st_mtime_ns
    check = check_receiver_db(db)
    assert check is not None
    assert check.status == "ok"
    assert "max age 7 d" in check.detail
    assert "max size 1 GiB" in check.detail
    assert "0 profiles" in check.detail
    assert db.stat().st_mtime_ns == before
    assert check_receiver_db(tmp_path / "missing.db") is None


def test_names_without_any_name_warns() -> None:
    """Neither service.name nor application_name: profiles land under unknown_service."""
    check = _doctor.check_names(Settings(), {})
    assert check.status == "warning"
    assert "OTEL_SERVICE_NAME" in check.fix


def test_pinning_says_whether_the_samplers_priority_can_be_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Allowed (root here): ok, naming the scheduling; refused: a warning with what to grant."""
    from span_profiles import _placement

    if not _placement.supported() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning needs Linux and two CPUs")
    allowed = _doctor.check_pinning(Settings.resolve({}))
    expected = _placement.sampler_priority_allowed()
    assert (allowed.status, expected is not None) in (("ok", True), ("warning", False))
    if os.geteuid() == 0:
        assert "SCHED_FIFO 1" in allowed.detail
    monkeypatch.setattr(_placement, "sampler_priority_allowed", lambda: None)
    refused = _doctor.check_pinning(Settings.resolve({}))
    assert refused.status == "warning"
    assert "CAP_SYS_NICE" in refused.detail
    assert refused.fix is not None
    assert "SYS_NICE" in refused.fix
