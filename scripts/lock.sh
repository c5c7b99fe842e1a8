#!/usr/bin/env bash
# Rewrite both lock files from pyproject.toml, for Python 3.11 on Linux x86_64, with hashes:
#   requirements.lock      build-system.requires + dependencies (what the Dockerfile installs)
#   requirements-dev.lock  the same pins + the dev extra (scripts/setup.sh's .venv, CI)
# Rerun it after any change to those lists (tests/test_lock.py fails until then). Versions
# already locked are kept unless pyproject.toml rules them out; extra arguments go to
# `uv pip compile`:
#   scripts/lock.sh --upgrade                    every package to its newest allowed version
#   scripts/lock.sh --upgrade-package starlette  one package (and what it needs)
# The dev lock is made under the runtime lock's pins, so both agree; if a dev tool needs a
# newer version of a runtime package, upgrade that package with --upgrade-package.
# After a merge conflict in a lock, take either side (git checkout --theirs -- '*.lock')
# and rerun this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

# The uv that pyproject.toml's dev extra pins (uv==X): .venv's, or that version installed
# once into a cache of its own (a fresh clone, a .venv that is missing or being redone).
uv_version="$("$PYTHON" -c '
import re, tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print(next(m[1] for r in dev if (m := re.fullmatch(r"uv==([\w.]+)", r.replace(" ", "")))))
')"
uv=.venv/bin/uv
if [ ! -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$uv_version" ]; then
  tools="${XDG_CACHE_HOME:-$HOME/.cache}/longrun/uv-$uv_version"
  if [ ! -x "$tools/bin/uv" ]; then
    echo "lock: installing uv $uv_version into $tools" >&2
    "$PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet "uv==$uv_version"
  fi
  uv="$tools/bin/uv"
fi

# The build backend is locked too: setup.sh and the Dockerfile build the project with
# --no-build-isolation, from the locked setuptools, instead of fetching one unpinned.
build_requires="$("$PYTHON" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))
')"

compile() {  # compile <lock> <which> <uv pip compile arguments...>
  local lock="$1" which="$2" what
  shift 2
  case "$which" in
    runtime) what="build-system.requires + dependencies: what the Dockerfile installs" ;;
    dev) what="requirements.lock + the dev extra: scripts/setup.sh's .venv and CI" ;;
  esac
  printf '%s\n' "$build_requires" | "$uv" pip compile --quiet --no-header \
    --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --output-file "$lock" pyproject.toml - "$@"
  {
    echo "# $lock: $what."
    echo "# Python 3.11, Linux x86_64. Made by scripts/lock.sh (uv $uv_version) from"
    echo "# pyproject.toml: do not edit; change pyproject.toml and rerun scripts/lock.sh."
    echo "# inputs: $("$PYTHON" tests/test_lock.py "$which")"
    cat "$lock"
  } > "$lock.tmp"
  mv "$lock.tmp" "$lock"
}

compile requirements.lock runtime "$@"
compile requirements-dev.lock dev --extra dev --constraint requirements.lock "$@"
echo "lock: wrote requirements.lock ($(grep -c '^[a-z0-9]' requirements.lock) packages)" \
  "and requirements-dev.lock ($(grep -c '^[a-z0-9]' requirements-dev.lock) packages)"
