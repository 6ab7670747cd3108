# Sourced by the install-* scripts: Debian packages as root, or through sudo.
#   apt_install WHAT HINT PACKAGE...   (WHAT names the caller in messages; HINT says what to do
#                                       where apt-get is missing)
apt_install() {
  local what=$1 hint=$2
  shift 2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$what: apt-get is not available; $hint" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -q
    APT_UPDATED=1
  fi
  $sudo apt-get install -y -q --no-install-recommends "$@"
}
