"""Instructions per task step, counted by valgrind (noise-free, unlike ``steps.py``'s timings on a
shared machine): ``python benchmarks/step_instructions.py [--before SRC] [--after SRC]``.

Each case runs ``N`` and ``3 N`` steps of ``await asyncio.sleep(0)`` in one process under
``valgrind --tool=callgrind``; the difference over ``2 N`` steps per task is the cost of one step,
start-up excluded. Cases: ``nospan`` (two tasks, no span), ``same`` (two tasks, one span: the
labels do not change between steps), ``alone`` (one task in a span: the loop runs it, then
nothing), ``change`` (two tasks, a span each: the labels change on every step). The sink is
``PyroscopeSink`` over the installed pyroscope-io (its native thread-tag calls, the agent not
started), so the counts include the agent's own cost of each label change. ``--before`` and ``--after`` are ``src`` directories
(``git worktree add /tmp/before <commit>``); without them, the installed package alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import asyncio, sys
from opentelemetry.sdk.trace import TracerProvider
import span_profiles
from span_profiles._core.sinks import PyroscopeSink

loop_kind, case, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
provider = TracerProvider()
span_profiles.instrument(tracer_provider=provider, sink=PyroscopeSink())
tracer = provider.get_tracer("instructions")


async def steps(k):
    for _ in range(k):
        await asyncio.sleep(0)


async def one(name):
    with tracer.start_as_current_span(name):
        await steps(n)


async def main():
    if case == "nospan":
        await asyncio.gather(steps(n), steps(n))
    elif case == "same":
        with tracer.start_as_current_span("same"):
            await asyncio.gather(steps(n), steps(n))
    elif case == "alone":
        with tracer.start_as_current_span("alone"):
            await steps(2 * n)
    else:
        await asyncio.gather(one("a"), one("b"))


if loop_kind == "uvloop":
    import uvloop

    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""

CASES = ("nospan", "same", "alone", "change")


def instructions(src: str | None, loop: str, case: str, n: int, script: str) -> int:
    """Instructions valgrind counted for one run of the child."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            loop,
            case,
            str(n),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"valgrind printed no count:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="src directory of the tree to compare against")
    parser.add_argument("--after", help="src directory of the tree under test")
    parser.add_argument("--steps", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--loops", default="asyncio,uvloop")
    args = parser.parse_args()
    trees = [("before", args.before), ("after", args.after)] if args.before else [("", args.after)]
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as file:
            file.write(CHILD)
        print(
            f"Python {sys.version.split()[0]}; instructions per step (valgrind, {args.steps} "
            f"and {3 * args.steps} steps per task)"
        )
        header = " | ".join(name or "instructions" for name, _ in trees)
        print(f"| loop | case | {header} |" + (" change |" if args.before else ""))
        print("|---|---|" + "---:|" * (len(trees) + (1 if args.before else 0)))
        for loop in args.loops.split(","):
            for case in CASES:
                counts = []
                for _, src in trees:
                    low = instructions(src, loop, case, args.steps, script)
                    high = instructions(src, loop, case, 3 * args.steps, script)
                    counts.append((high - low) // (4 * args.steps))
                row = " | ".join(str(c) for c in counts)
                extra = f" {counts[1] / counts[0]:.2f}x |" if args.before else ""
                print(f"| {loop} | {case} | {row} |{extra}", flush=True)


if __name__ == "__main__":
    main()
