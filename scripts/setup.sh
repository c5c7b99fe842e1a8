#!/usr/bin/env bash
# Make .venv from the dev lock (requirements-dev.lock: the runtime pins plus the dev tools, each
# checked against its hash), then the project and its Python client (client/), editable,
# without dependencies (the client's are in the lock). Reinstall only when the lock or a
# pyproject.toml changed. Sourced by dev.sh, test.sh, audit.sh and CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "longrun needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.longrun-installed"
want="$(cat requirements-dev.lock pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # The lock pins pip and setuptools too: the project is built with the locked setuptools
  # (--no-build-isolation), so nothing unpinned is fetched.
  .venv/bin/python -m pip install --quiet --require-hashes -r requirements-dev.lock
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . -e ./client
  echo "$want" > "$stamp"
fi
