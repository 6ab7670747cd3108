#!/usr/bin/env bash
# Runs every check on a fresh machine: sets up nox in .venv-tools, then the nox sessions
# (lint + mypy, the core without extras, the suite on Python 3.10, 3.11 and 3.13).
# Extra arguments go to nox, e.g. `scripts/test.sh -s tests-3.12`.
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

# The receiver UI's browser tests need Debian's chromium; they fail (never skip) in CI without it.
scripts/install-browser.sh

python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --upgrade pip
.venv-tools/bin/python -m pip install --quiet "nox>=2024.4" "uv>=0.4"
PATH="$PWD/.venv-tools/bin:$PATH" exec .venv-tools/bin/nox "$@"
