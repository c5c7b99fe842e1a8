#!/usr/bin/env bash
# Audit the locked set for known vulnerabilities: pip-audit reads the pins of requirements.lock
# (the image) and requirements-dev.lock (the dev venv and CI) and asks PyPI's JSON API for each
# pinned version's `vulnerabilities` (PyPI's OSV-backed advisory data). Nothing is installed
# or resolved: --disable-pip --require-hashes takes the lock files as they are (hashes must be
# there; pip checks them at install time).
#
#   exit 0  no known vulnerability in either lock
#   exit 1  a known vulnerability, or the audit broke: raise the package's lower bound in
#           pyproject.toml (or scripts/lock.sh --upgrade-package NAME), then rerun
#   PyPI's vulnerability data unreachable (no network, or an index proxy that does not pass
#   PyPI's JSON API on): "NOT AUDITED" on stderr and exit 0, so an outage outside the project
#   does not stop CI; with AUDIT_UNREACHABLE=fail, exit 3 instead.
#
# pip-audit runs with --strict: a package it cannot look up fails the run (without it, pip-audit
# skips such a package and still reports "No known vulnerabilities found").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh # pip-audit comes from the dev lock
on_unreachable="${AUDIT_UNREACHABLE:-warn}"
case "$on_unreachable" in
  warn | fail) ;;
  *)
    echo "audit: AUDIT_UNREACHABLE must be warn or fail, not '$on_unreachable'" >&2
    exit 2
    ;;
esac

# Advisories accepted on purpose: add "--ignore-vuln ID" here, with a comment saying why.
ignore=()

# Can PyPI's vulnerability data be had? One look-up first, of the runtime lock's first pin,
# by pip-audit's own PyPI service (the same address, HTTP session and cache as the audit).
# Exit 10: unreachable, the reason on stdout; any other failure of the look-up fails the audit.
probe_status=0
reason="$(
  .venv/bin/python - <<'PY'
import re
import sys

import requests
from packaging.version import Version
from pip_audit._service.interface import ResolvedDependency, ServiceError
from pip_audit._service.pypi import PyPIService

pin = re.search(r"^([A-Za-z0-9._-]+)==(\S+)", open("requirements.lock").read(), re.M)
dependency = ResolvedDependency(name=pin[1], version=Version(pin[2]))
try:
    answer, _ = PyPIService(timeout=15).query(dependency)
except (ServiceError, requests.RequestException) as error:
    print(f"looking up {pin[1]} {pin[2]}: {type(error).__name__}: {error}")
    sys.exit(10)
if answer.is_skipped():
    print(f"no vulnerability data for {pin[1]} {pin[2]}: {answer.skip_reason}")
    sys.exit(10)
PY
)" || probe_status=$?
if [ "$probe_status" -eq 10 ]; then
  {
    echo "audit: NOT AUDITED: PyPI's vulnerability data cannot be reached ($reason)."
    echo "audit: the locked set was not checked for known vulnerabilities."
  } >&2
  if [ "$on_unreachable" = fail ]; then
    echo "audit: failing (AUDIT_UNREACHABLE=fail)" >&2
    exit 3
  fi
  echo "audit: carrying on without it (AUDIT_UNREACHABLE=fail would stop here)" >&2
  exit 0
elif [ "$probe_status" -ne 0 ]; then
  echo "audit: FAILED: the look-up of PyPI's vulnerability data broke (above)" >&2
  exit 1
fi

status=0
for lock in requirements.lock requirements-dev.lock; do
  echo "audit: $lock"
  .venv/bin/pip-audit --disable-pip --require-hashes --strict --progress-spinner off \
    --desc on --vulnerability-service pypi ${ignore[@]+"${ignore[@]}"} -r "$lock" || status=1
done
if [ "$status" -ne 0 ]; then
  echo "audit: FAILED (above): raise the affected package's lower bound in pyproject.toml" \
    "(or scripts/lock.sh --upgrade-package NAME), then rerun scripts/audit.sh" >&2
  exit 1
fi
echo "audit: no known vulnerabilities in requirements.lock and requirements-dev.lock"
