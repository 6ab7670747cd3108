#!/usr/bin/env bash
# Installs what the real-app e2e test and benchmark run: Debian's PostgreSQL server (initdb and
# pg_ctl under /usr/lib/postgresql/*/bin; tests/support/postgres.py starts a private cluster from them).
# Idempotent: does nothing when initdb is there. No system cluster is created or started (Debian's
# createcluster.conf says so before the server package is installed): tests run their own.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
hint="install PostgreSQL and point SPAN_PROFILES_PG_BINDIR at its bin directory"
apt_install install-postgres "$hint" postgresql-common
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/span-profiles.conf >/dev/null
apt_install install-postgres "$hint" postgresql
ls /usr/lib/postgresql/*/bin/initdb
