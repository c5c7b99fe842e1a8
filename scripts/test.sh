#!/usr/bin/env bash
# Run the whole test suite (slow fault-injection tests included); extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick part only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/pytest "$@"
