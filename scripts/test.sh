#!/usr/bin/env bash
# Run the whole test suite (slow fault-injection tests included); extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick part only. First, what the tests need of the
# system (redis-server, promtool, chromium, python3-venv) is installed when missing
# (scripts/system-deps.sh); when it cannot be, the tests run anyway and those that need it fail.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! scripts/system-deps.sh; then
  echo "test.sh: running the tests anyway; those that need what is missing will fail" >&2
fi
source scripts/setup.sh
exec .venv/bin/pytest "$@"
