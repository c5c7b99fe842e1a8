"""Install what the benchmarks need on a fresh machine, once: the `bench` extra in `.venv`
(matplotlib, SAQ, py-spy), the Celery recipe's own virtualenv (`bench/.venv-celery`, from
`bench/requirements-celery.txt`: Celery 5.7 needs redis-py >= 6.4, arq 0.28 needs < 6) and
Debian's `wrk`. Each step is skipped when already done; `bench/run.sh` and `python -m bench`
call `ensure()`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys

from bench.common import CELERY_BIN, ROOT, log

CELERY_VENV = CELERY_BIN.parent
CELERY_REQUIREMENTS = ROOT / "bench" / "requirements-celery.txt"
CELERY_STAMP = CELERY_VENV / ".bench-installed"
BENCH_MODULES = ("matplotlib", "saq", "croniter")


def _run(args: list[str], what: str, timeout_s: float = 900) -> None:
    log(f"installing {what}: {' '.join(args)}")
    subprocess.run(args, cwd=ROOT, check=True, timeout=timeout_s)


def ensure_bench_extra() -> None:
    """`pip install -e '.[dev,bench]'` into this interpreter's environment when the bench
    extra is missing."""
    missing = [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]
    if missing or not (ROOT / ".venv" / "bin" / "py-spy").exists():
        _run([sys.executable, "-m", "pip", "install", "--quiet", "-e", ".[dev,bench]"],
             "the bench extra")  # fmt: skip


def ensure_celery_venv() -> None:
    """`bench/.venv-celery` with `bench/requirements-celery.txt`, remade when the file
    changes."""
    want = hashlib.sha256(CELERY_REQUIREMENTS.read_bytes()).hexdigest()
    installed = CELERY_STAMP.read_text().strip() if CELERY_STAMP.exists() else ""
    if (CELERY_BIN / "celery").exists() and installed == want:
        return
    python = shutil.which("python3.11") or shutil.which("python3") or sys.executable
    if not (CELERY_BIN / "python").exists():
        _run([python, "-m", "venv", str(CELERY_VENV)], "the Celery virtualenv")
    _run([str(CELERY_BIN / "python"), "-m", "pip", "install", "--quiet", "-r",
          str(CELERY_REQUIREMENTS)], "the Celery recipe's packages")  # fmt: skip
    CELERY_STAMP.write_text(want + "\n")


def ensure_wrk() -> None:
    """Debian's wrk (apt-get, as root)."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing: apt-get install -y wrk (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing wrk with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        timeout=600,
        env=env,
    )


def ensure() -> None:
    """Everything the benchmarks need."""
    if not shutil.which("redis-server") and not os.path.exists("/usr/bin/redis-server"):
        raise RuntimeError("redis-server is missing: apt-get install -y redis-server")
    ensure_bench_extra()
    ensure_celery_venv()
    ensure_wrk()


if __name__ == "__main__":
    ensure()
