#!/usr/bin/env bash
# Install, from Debian's packages, what the tests need of the system and find missing:
#   python3 and python3-venv  scripts/setup.sh makes .venv with them
#   redis-server              the tests start Redis servers of their own, and Sentinels
#                             (`redis-server --sentinel`: tests/test_failover.py, the chaos run)
#   prometheus (promtool)     tests/test_observability.py checks the alert rules with it
#   chromium                  tests/test_dashboard.py drives it (CHROMIUM=/path picks another)
#   unzip                     tests/test_export_archive.py tests a ZIP64 archive with `unzip -t`
# When all are there it does nothing (no apt). Otherwise it runs apt-get as root, or through
# sudo when sudo needs no password; when it cannot, it says what is missing, why, and the
# command that installs it, and exits 1. Used by scripts/test.sh and .ci/run.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
packages=()
missing=()
need() {  # need <package> <what is missing>
  packages+=("$1")
  missing+=("$2")
}
look() {
  packages=()
  missing=()
  # A PYTHON of the user's own is theirs to provide; setup.sh checks it.
  if [ "$PYTHON" = python3 ]; then
    if ! command -v python3 >/dev/null 2>&1; then
      need python3 "python3"
      need python3-venv "python3's venv"
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
      need python3-venv "python3's venv (ensurepip)"
    fi
  fi
  command -v redis-server >/dev/null 2>&1 || need redis-server "redis-server"
  command -v promtool >/dev/null 2>&1 || need prometheus "promtool"
  command -v unzip >/dev/null 2>&1 || need unzip "unzip"
  if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] || need chromium "chromium (CHROMIUM=$CHROMIUM is not executable)"
  else
    command -v chromium >/dev/null 2>&1 || need chromium "chromium"
  fi
}
say() { echo "system-deps: $*" >&2; }
cannot() {
  say "missing: ${missing[*]}; cannot install it here: $1."
  say "install it yourself, then run this again:"
  say "  apt-get install -y --no-install-recommends ${packages[*]}  (as root)"
  say "or, on another system, its own packages of: ${packages[*]}"
  exit 1
}

look
[ ${#packages[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  cannot "there is no apt-get (not Debian or Ubuntu)"
elif [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  cannot "not root, and no sudo that works without a password"
fi

say "missing: ${missing[*]}; installing ${packages[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -q \
  || ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"; then
  cannot "apt-get failed (see above)"
fi
look
if [ ${#packages[@]} -gt 0 ]; then
  say "installed, but still missing: ${missing[*]} (not on PATH=$PATH?)"
  exit 1
fi
say "installed: everything the tests need is here"
