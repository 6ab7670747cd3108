#!/usr/bin/env bash
# Installs what the receiver UI's browser tests drive: Debian's chromium and chromium-driver.
# Idempotent: does nothing when /usr/bin/chromium exists. Never downloads a browser of its own
# (no `playwright install`): the tests launch /usr/bin/chromium through Playwright.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
apt_install install-browser \
  "install Chromium at /usr/bin/chromium to run tests/receiver/web/browser" \
  chromium chromium-driver
/usr/bin/chromium --version
