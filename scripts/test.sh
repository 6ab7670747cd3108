#!/usr/bin/env bash
# Runs every check on a fresh machine: installs what the tests need (Chromium; Python 3.14 and 3.15,
# which pyenv has no build of here), sets up nox in .venv-tools, then the default nox sessions:
# lint (ruff + mypy --strict on src and tests), core (tests/core/ without any extra), and the whole
# suite on Python 3.10 to 3.15. Extra arguments go to nox, e.g.
# `scripts/test.sh -s fast` (the tests not marked e2e, in seconds) or `scripts/test.sh -s tests-3.14`.
#
# Exit status: 0 only if every selected session passed. A session whose Python is missing fails
# (noxfile: error_on_missing_interpreters), and so does a pytest run that collects no test (pytest's
# exit 5): the suite always has tests, so none collected means a broken selection, never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

# pyenv installs the interpreters under $(pyenv root)/versions; nox looks for python3.X on PATH.
if command -v pyenv >/dev/null 2>&1; then
  for minor in 3.10 3.11 3.12 3.13; do
    dir=$(ls -d "$(pyenv root)"/versions/"$minor".*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && PATH="$dir:$PATH"
  done
  export PATH
fi

# 3.14 and 3.15 from Debian's forky (scripts/install-pythons.sh; cached: a quick check once
# installed). PYTHONS_PREFIX is where they go, PREFIX for that script.
pythons_prefix=${PYTHONS_PREFIX:-/opt/newpy}
PREFIX=$pythons_prefix scripts/install-pythons.sh
PATH="$pythons_prefix/bin:$PATH"
export PATH

# The receiver UI's browser tests need Debian's chromium; they fail (never skip) in CI without it.
scripts/install-browser.sh
# The real-app e2e test runs a private PostgreSQL cluster; it fails (never skips) in CI without it.
scripts/install-postgres.sh

python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --upgrade pip
# nox 2025.02.09 added nox.project.dependency_groups, which the noxfile reads pyproject.toml with.
.venv-tools/bin/python -m pip install --quiet "nox>=2025.2.9" "uv>=0.4"

status=0
PATH="$PWD/.venv-tools/bin:$PATH" .venv-tools/bin/nox "$@" || status=$?
if [ "$status" -eq 0 ]; then
  echo "scripts/test.sh: every nox session passed"
else
  echo "scripts/test.sh: FAILED: nox exited with status $status (see the sessions above)" >&2
fi
exit "$status"
