#!/usr/bin/env bash
# Reproduces the vendored front-end files of the receiver's web UI and flame graph pages from
# pinned npm versions, and checks every file against its pinned sha256.
#
#   scripts/vendor-frontend.sh          fetch with `npm pack`, verify, copy into the package
#   scripts/vendor-frontend.sh --check  verify the files already in the package (no network)
#
# To upgrade: change a version below, run with UPDATE_HASHES=1 to print the new hashes, review
# the upstream changes, then paste the hashes here.
set -euo pipefail
cd "$(dirname "$0")/.."

STATIC=src/span_profiles/receiver/web/static
D3_VERSION=7.9.2
FLAME_VERSION=5.0.0

# package tarball sha256, then "vendored path  sha256  path inside the tarball"
D3_TGZ_SHA256=f0c1d2c2479907a6e3265370d0fd715f7aef0f561cdd2b415df385ba7df9d1aa
FLAME_TGZ_SHA256=f12f7540b6e6e787277908d70b7169da7ced5be8737bcff2bd27f3fe4b9961c9
FILES=(
  "d3/d3.min.js 912111098ea99503a6f4967361d2bbdc9dbf58cf9c678c8e27e5b02d1a07f0c1 package/dist/d3.min.js"
  "d3/LICENSE 2a6d2d5f32ba0b755ddbc1c833f766e30cdbe6ebe9a6d4e3e24427721f0b63d3 package/LICENSE"
  "d3-flame-graph/d3-flamegraph.min.js 5f8d8bc7bf7f8329248d43c1e215431a88f77e17daa217f3c31b019b8b71b3f7 package/dist/d3-flamegraph.umd.min.js"
  "d3-flame-graph/LICENSE b40930bbcf80744c86c46a12bc9da056641d722716c378f5659b9e555ef833e1 package/LICENSE"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

check_file() {  # path expected
  local got
  got=$(sha "$1")
  if [ "$got" != "$2" ]; then
    if [ "${UPDATE_HASHES:-}" = 1 ]; then
      echo "$1 $got"
      return 0
    fi
    echo "vendor-frontend: sha256 mismatch for $1: got $got, want $2" >&2
    return 1
  fi
}

if [ "${1:-}" = "--check" ]; then
  for entry in "${FILES[@]}"; do
    read -r dest hash _ <<<"$entry"
    check_file "$STATIC/$dest" "$hash"
  done
  echo "vendor-frontend: vendored files match their pinned hashes"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "d3@$D3_VERSION" "d3-flame-graph@$FLAME_VERSION" >/dev/null)
check_file "$work/d3-$D3_VERSION.tgz" "$D3_TGZ_SHA256"
check_file "$work/d3-flame-graph-$FLAME_VERSION.tgz" "$FLAME_TGZ_SHA256"
mkdir -p "$work/d3" "$work/d3-flame-graph"
tar -xzf "$work/d3-$D3_VERSION.tgz" -C "$work/d3"
tar -xzf "$work/d3-flame-graph-$FLAME_VERSION.tgz" -C "$work/d3-flame-graph"
for entry in "${FILES[@]}"; do
  read -r dest hash inner <<<"$entry"
  src="$work/${dest%%/*}/$inner"
  check_file "$src" "$hash"
  mkdir -p "$STATIC/$(dirname "$dest")"
  cp "$src" "$STATIC/$dest"
done
cat >"$STATIC/VERSIONS" <<VERSIONS
d3 $D3_VERSION (npm, ISC licence: d3/LICENSE)
d3-flame-graph $FLAME_VERSION (npm, Apache-2.0 licence: d3-flame-graph/LICENSE)
Reproduce and verify with scripts/vendor-frontend.sh; check with scripts/vendor-frontend.sh --check.
VERSIONS
echo "vendor-frontend: d3 $D3_VERSION and d3-flame-graph $FLAME_VERSION vendored into $STATIC"
