#!/usr/bin/env bash
# Set up and run the whole stack on embedded defaults (local Redis, a local S3 emulator when
# S3_ENDPOINT_URL is unset), then run a short demo through the public API.
# --demo-only: stop everything after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python scripts/devstack.py "$@"
