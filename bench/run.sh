#!/usr/bin/env bash
# The one benchmark command: make .venv if needed (scripts/setup.sh), then run every
# benchmark and write bench/RESULTS.md and bench/charts/*.png. `--quick`: a tiny run into
# bench/results/quick/ (what tests/test_bench.py runs). Other options: python -m bench --help.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m bench "$@"
