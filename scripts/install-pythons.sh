#!/usr/bin/env bash
# Installs the CPython versions pyenv has no build of here (3.14 and 3.15) from Debian's testing
# suite, forky, on a Debian 12 (bookworm) machine, without upgrading the host:
#   1. `debootstrap` a minimal forky tree (ROOT) holding python3.X, its venv module and headers;
#   2. copy each interpreter to PREFIX/bin and point it at the tree's loader and libraries with
#      `patchelf` (DT_RPATH, which also covers the stdlib's extension modules, so `_ssl` never
#      loads the host's OpenSSL); only that process uses forky's glibc, programs it starts keep
#      the host's, and nothing goes through LD_LIBRARY_PATH;
#   3. put a real lib/python3.X and the headers next to the copy (venvs and C extensions need them).
# Then PREFIX/bin/python3.14 and python3.15 run, make venvs and build C extensions; nox finds
# them once PREFIX/bin is on PATH (scripts/test.sh does that).
#
# Idempotent and cached: when every PREFIX/bin/python3.X already imports ssl, sqlite3, ctypes and
# venv, it prints one line per version and exits (a fraction of a second, no root needed).
# Otherwise it needs root (it uses sudo when not root) and apt-get (for debootstrap and patchelf);
# without them it stops with an error saying what to do instead. A full install takes about a
# minute and ~600 MB. The tree is built in ROOT.partial and moved into place only when complete,
# so an interrupted run starts over cleanly; a lock keeps two runs from building at once.
#
# Settings (environment): ROOT (default /opt/forky-root), PREFIX (default /opt/newpy),
# VERSIONS (default "3.14 3.15"), MIRROR (default: the Debian mirror apt already uses).
# Facts behind the recipe: docs/python-versions.md.
set -euo pipefail

ROOT=${ROOT:-/opt/forky-root}
PREFIX=${PREFIX:-/opt/newpy}
VERSIONS=${VERSIONS:-"3.14 3.15"}
SUITE=forky
CHECK='import sys, ssl, sqlite3, ctypes, venv; print(sys.version.split()[0])'

say() { echo "install-pythons: $*"; }
die() { echo "install-pythons: error: $*" >&2; exit 1; }

installed() {  # every requested interpreter runs and has the modules venvs and the tests need
  local v
  for v in $VERSIONS; do
    "$PREFIX/bin/python$v" -c "$CHECK" >/dev/null 2>&1 || return 1
  done
}

if installed; then
  for v in $VERSIONS; do say "python$v $("$PREFIX/bin/python$v" -c "$CHECK") in $PREFIX/bin"; done
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 ||
    die "installing Python $VERSIONS needs root (or sudo) and apt-get; or install them another way and put python3.14/python3.15 on PATH"
  exec sudo --preserve-env=ROOT,PREFIX,VERSIONS,MIRROR bash "$0" "$@"
fi

command -v apt-get >/dev/null 2>&1 ||
  die "apt-get is not available: this recipe is for Debian-like machines. Install CPython $VERSIONS another way (your distribution, pyenv, python.org) and put python3.14/python3.15 on PATH"

mkdir -p "$(dirname "$ROOT")" "$PREFIX"
exec 9>"$PREFIX/.install.lock"
flock 9
if installed; then  # another run finished while this one waited for the lock
  exec bash "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1 || ! command -v patchelf >/dev/null 2>&1; then
  say "installing debootstrap and patchelf with apt-get"
  apt-get update -q || die "apt-get update failed (no network or no mirror?)"
  apt-get install -y -q --no-install-recommends debootstrap patchelf ||
    die "apt-get could not install debootstrap and patchelf"
fi

if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$MIRROR" ]; then
    MIRROR=$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

missing_in_root=""
for v in $VERSIONS; do
  [ -x "$ROOT/usr/bin/python$v" ] && [ -d "$ROOT/usr/lib/python$v/venv" ] || missing_in_root=yes
done
if [ -n "$missing_in_root" ]; then
  packages=ca-certificates
  for v in $VERSIONS; do packages="$packages,python$v,python$v-venv,python$v-dev"; done
  # bookworm's debootstrap has no forky script yet; sid's serves every later suite.
  script=/usr/share/debootstrap/scripts/$SUITE
  [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
  say "debootstrap $SUITE ($packages) from $MIRROR into $ROOT"
  rm -rf "$ROOT.partial"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$ROOT.partial" "$MIRROR" "$script" ||
    die "debootstrap failed (see above); nothing was changed in $ROOT"
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
fi

loader=$(find "$ROOT/usr/lib" -maxdepth 2 -name 'ld-linux*.so.*' | head -n 1)
[ -n "$loader" ] || die "no dynamic loader found in $ROOT/usr/lib"
libdir=$(dirname "$loader")
multiarch=$(basename "$libdir")

mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/include"
for v in $VERSIONS; do
  cp "$ROOT/usr/bin/python$v" "$PREFIX/bin/python$v.new"
  patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libdir" "$PREFIX/bin/python$v.new"
  rm -rf "$PREFIX/lib/python$v" "$PREFIX/include/python$v"
  # A real stdlib directory next to the binary: venv finds its home from there.
  cp -a "$ROOT/usr/lib/python$v" "$PREFIX/lib/"
  # ensurepip takes Debian's pip wheel from the tree, not from the host's /usr/share.
  sed -i "s#'/usr/share/python-wheels/'#'$ROOT/usr/share/python-wheels/'#" \
    "$PREFIX"/lib/python$v/_sysconfigdata_*.py
  # Headers for sdists with C code; Debian's pyconfig.h is a multiarch stub, so the real one.
  cp -r "$ROOT/usr/include/python$v" "$PREFIX/include/"
  cp "$ROOT/usr/include/$multiarch/python$v/pyconfig.h" "$PREFIX/include/python$v/pyconfig.h"
  mv "$PREFIX/bin/python$v.new" "$PREFIX/bin/python$v"
  "$PREFIX/bin/python$v" -c "$CHECK" >/dev/null || die "python$v was installed but does not run"
done
for v in $VERSIONS; do say "python$v $("$PREFIX/bin/python$v" -c "$CHECK") installed in $PREFIX/bin"; done
