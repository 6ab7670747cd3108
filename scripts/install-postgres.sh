#!/usr/bin/env bash
# Installs what the real-app e2e test and benchmark run: Debian's PostgreSQL server (initdb and
# pg_ctl under /usr/lib/postgresql/*/bin; tests/support/postgres.py starts a private cluster from them).
# Idempotent: does nothing when initdb is there. No system cluster is created or started (Debian's
# createcluster.conf says so before the server package is installed): tests run their own.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no PostgreSQL server under /usr/lib/postgresql and apt-get is not" \
    "available; install PostgreSQL and point SPAN_PROFILES_PG_BINDIR at its bin directory" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends postgresql-common
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/span-profiles.conf >/dev/null
$sudo apt-get install -y -q --no-install-recommends postgresql
ls /usr/lib/postgresql/*/bin/initdb
