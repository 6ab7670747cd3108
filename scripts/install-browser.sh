#!/usr/bin/env bash
# Installs what the receiver UI's browser tests drive: Debian's chromium and chromium-driver.
# Idempotent: does nothing when /usr/bin/chromium exists. Never downloads a browser of its own
# (no `playwright install`): the tests launch /usr/bin/chromium through Playwright.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: /usr/bin/chromium is missing and apt-get is not available;" \
    "install Chromium at /usr/bin/chromium to run tests/receiver/web/browser" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
