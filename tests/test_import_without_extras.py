"""The core imports and works with no framework, trio or agent installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.e2e

BLOCKED = [
    "trio",
    "uvloop",
    "anyio",
    "starlette",
    "fastapi",
    "django",
    "flask",
    "asgiref",
    "pyroscope",
    "google.protobuf",
    "werkzeug",
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.abc, sys
    blocked = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {{b.split(".")[0] for b in blocked}}:
                raise ModuleNotFoundError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import span_profiles
    from span_profiles.testing import RecordingSink
    from opentelemetry.sdk.trace import TracerProvider

    provider, sink = TracerProvider(), RecordingSink()
    span_profiles.instrument(tracer_provider=provider, sink=sink)
    tracer = provider.get_tracer("t")

    async def main():
        with tracer.start_as_current_span("r") as span:
            await asyncio.sleep(0)
            await asyncio.to_thread(lambda: None)
            assert sink.current()["span_id"] == format(span.get_span_context().span_id, "016x")

    asyncio.run(main())
    span_profiles.uninstrument()
    loaded = [m for m in blocked if m in sys.modules]
    assert not loaded, loaded
    print("core ok")
    """
)


def test_core_imports_and_labels_with_every_extra_blocked() -> None:
    """With every optional dependency made unimportable, instrument() works on asyncio."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "core ok" in result.stdout
