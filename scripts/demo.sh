#!/usr/bin/env bash
# The span-profiles demo on a fresh machine: a virtualenv in .venv-demo (at the repository root),
# the package with its FastAPI, agent and receiver extras plus uvicorn, then examples/demo.py.
# Needs python3 (3.10+) with the venv module, and network access to PyPI for the first run.
# It ends by writing the flame graph of the request that used the most CPU to
# ./span-profiles-demo/top-request.html (next to the demo's profiles.db) and printing the web UI's
# address; --serve keeps the receiver and its UI up until Ctrl-C (on port 4040, --port N).
# Usage: scripts/demo.sh [--serve] [--json] [demo.py options]   (from any directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-demo"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv" >&2
    "$python" -m venv "$venv"
fi
# Quiet, but errors still show; re-running on an existing venv is quick.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root[fastapi,pyroscope,receiver]" uvicorn

exec "$venv/bin/python" "$root/examples/demo.py" "$@"
