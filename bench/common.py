"""What the benchmarks share: the JSON file each run writes (`Recorder`), child processes
stopped by their pid, CPU from /proc, environments without the service's settings, medians
with min-max, the commit and the machine's state, and the Celery recipe's worker command.

Every process started through `Children` runs in its own session (process group), binds
127.0.0.1, and is ended by its pid (SIGTERM to its group, then SIGKILL) when the benchmark
ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUR_BIN = Path(sys.executable).parent
CELERY_BIN = ROOT / "bench" / ".venv-celery" / "bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 15.0
SCHEMA = 1
# What the report writes: a change there is not a change to the tree a benchmark measures.
REPORT_OUTPUTS = ("bench/results", "bench/RESULTS.md", "bench/charts", "README.md")
MAX_DIRTY_PATHS = 20
# Every library our side of a benchmark runs: the service's dependencies and the peers that
# share `.venv` (SAQ, moto). Each JSON file records all of their versions.
OUR_LIBRARIES = (
    "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "pydantic-settings",
    "arq", "redis", "hiredis", "httpx", "httpcore", "httpx2", "anthropic", "aioboto3",
    "aiobotocore", "botocore", "prometheus-client", "python-ulid", "standardwebhooks",
    "cryptography", "saq", "moto",
)  # fmt: skip
CELERY_LIBRARIES = (
    "celery",
    "kombu",
    "billiard",
    "redis",
    "anthropic",
    "httpx",
    "httpx2",
    "gevent",
)


def log(message: str) -> None:
    """Progress goes to stderr; tables go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark stopped by `bench/run.sh`'s time limit
    still runs its `finally` blocks and stops the processes it started."""

    def _raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise_exit)


def require_celery_venv(sides: list[str]) -> None:
    """Exit with a message when a Celery side is asked for but its virtualenv is missing."""
    if "celery" in sides and not (CELERY_BIN / "celery").exists():
        sys.exit(f"{CELERY_BIN.parent} is missing: bench/run.sh makes it")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max (and how many) of some repetitions."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float) -> Any:
    """Poll until `predicate` returns something truthy; TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def service_free_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any of the service's settings (so a child sees
    the defaults, in development: the built-in SECRETS_KEY), plus `extra` and
    PYTHONPATH=the repository."""
    from jobs.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in names and not k.startswith(("CELERY_", "BENCH_", "VIRTUAL_ENV"))
    }
    env["ENVIRONMENT"] = "development"
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Children:
    """The processes a benchmark started; `stop_all` ends every one still running."""

    log_dir: Path
    started: list[subprocess.Popen] = field(default_factory=list)

    def start(
        self, args: list[str], env: dict[str, str], name: str, cwd: Path = ROOT
    ) -> subprocess.Popen:
        """Start `args` in its own session in `cwd`, output to `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "wb") as out:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM the process group we started, SIGKILL it after a grace period."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {STOP_GRACE_S:g}s; killing it")
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its children too, if any outlived it
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} still there 10 s after SIGKILL")
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.started):
            self.stop(proc)

    def check_alive(self, proc: subprocess.Popen, what: str) -> None:
        """Raise with the tail of its log when the process has exited."""
        if proc.poll() is not None:
            name = next((p.name for p in self.log_dir.glob("*.log")), "")
            raise RuntimeError(f"{what} (pid {proc.pid}) exited with {proc.returncode}; {name}")


def _stat_fields(stat: str) -> tuple[int, float]:
    """(process group, CPU seconds so far) from a /proc/<pid>/stat line."""
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[2]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) one live process has used so far (Linux /proc)."""
    try:
        return _stat_fields(Path(f"/proc/{pid}/stat").read_text())[1]
    except (OSError, IndexError, ValueError):
        return 0.0


def group_cpu_s(pgid: int) -> float:
    """CPU seconds the live processes of a process group have used so far (Linux /proc)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pgrp, cpu = _stat_fields((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == pgid:
            total += cpu
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class MachineMeter:
    """How busy the whole machine was between `start()` and `read()`: CPU seconds of all
    cores, the share of its capacity, and the 1-minute load average at each end."""

    started_busy: float = 0.0
    started_at: float = 0.0
    load_before: float = 0.0

    def start(self) -> MachineMeter:
        self.started_busy = machine_busy_s()
        self.started_at = time.monotonic()
        self.load_before = os.getloadavg()[0]
        return self

    def read(self, ours_cpu_s: float = 0.0) -> dict[str, float]:
        """`other_cpu_s`: what the machine used beyond `ours_cpu_s` (the processes measured)."""
        busy = machine_busy_s() - self.started_busy
        span = max(1e-6, time.monotonic() - self.started_at)
        return {
            "span_s": round(span, 2),
            "machine_cpu_s": round(busy, 2),
            "machine_busy_share": round(busy / (span * (os.cpu_count() or 1)), 3),
            "other_cpu_s": round(max(0.0, busy - ours_cpu_s), 2),
            "loadavg_1m_before": round(self.load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }


def git_state() -> dict[str, Any]:
    """The commit of the checkout a benchmark measures and whether its tree is dirty: any
    uncommitted change (untracked files too) outside the report's own outputs. Other people
    edit code while benchmarks run, and a worker imports whatever is on disk when it starts."""

    def git(*args: str) -> str:
        answer = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return answer.stdout.rstrip()  # not strip(): a porcelain line may start with a space

    excluded = [f":(exclude){path}" for path in REPORT_OUTPUTS]
    paths = [line[3:] for line in git("status", "--porcelain", "--", ".", *excluded).splitlines()]
    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit,
        "short": commit[:7],
        "dirty": bool(paths),
        "dirty_paths": paths[:MAX_DIRTY_PATHS],
    }


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions in this interpreter's environment, plus Python and redis-server."""
    found: dict[str, str] = {}
    for name in names:
        # A library missing from this environment is not involved (httpx2 or httpx, say).
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    found["python"] = platform.python_version()
    answer = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    found["redis-server"] = answer.stdout.split(" v=")[-1].split()[0] if answer.stdout else "?"
    return found


def our_versions(*extra: str) -> dict[str, str]:
    """Versions of every library our side of any benchmark runs (the service's dependencies,
    the peers sharing `.venv`), plus `extra`, Python and redis-server."""
    return package_versions(*OUR_LIBRARIES, *extra)


def celery_versions() -> dict[str, str] | None:
    """Versions in the Celery recipe's own virtualenv, or None when it is missing."""
    if not (CELERY_BIN / "python").exists():
        return None
    code = (
        "import json, platform; from importlib.metadata import version, PackageNotFoundError\n"
        "def v(n):\n"
        "    try:\n"
        "        return version(n)\n"
        "    except PackageNotFoundError:\n"
        "        return None\n"
        f"found = {{n: v(n) for n in {CELERY_LIBRARIES!r} if v(n)}}\n"
        "found['python'] = platform.python_version(); print(json.dumps(found))"
    )
    answer = subprocess.run(
        [str(CELERY_BIN / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(answer.stdout)


def celery_worker_command(pool: str = "prefork", concurrency: int | None = None) -> list[str]:
    """The Celery recipe's worker. The recipe sets no pool and no concurrency, so by default
    this is Celery's own default: prefork with one process per CPU (`os.cpu_count()`)."""
    args = [str(CELERY_BIN / "celery"), "-A", "bench.celery_recipe", "worker",
            f"--pool={pool}", "--loglevel=warning"]  # fmt: skip
    if concurrency is not None:
        args.append(f"--concurrency={concurrency}")
    return args


def celery_pool_settings(pool: str = "prefork", concurrency: int | None = None) -> str:
    """How a Celery side ran, as the report shows it."""
    how = (
        f"--concurrency={concurrency}"
        if concurrency is not None
        else f"Celery's default concurrency (the CPU count, {os.cpu_count()})"
    )
    return f"--pool={pool}, {how}, prefetch 1, acks late"


def machine_now() -> dict[str, Any]:
    """The machine's CPU count and load average at this moment."""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


def machine() -> dict[str, Any]:
    """The host, and that it is shared."""
    return {
        "platform": platform.platform(),
        "note": f"{os.cpu_count()} cores, shared with other engineers' test and chaos runs; "
        "every figure runs the system under test, Redis and the load generator on them",
    }


def utc_now() -> str:
    """The wall-clock time in UTC, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_common_args(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """`--out PATH` and `--quick` (the run is a tiny one whose figures mean nothing; its
    JSON says so and the report judges no target on it)."""
    parser.add_argument("--out", type=Path, default=default_out, help="the JSON results file")
    parser.add_argument(
        "--quick", action="store_true", help="mark the results as a quick run's (no targets)"
    )


class Recorder:
    """The JSON file one benchmark run writes (`bench/results/<name>.json`, tracked by git).

    Its shape, which `bench/report.py` reads (and bench/README.md documents):
    `schema`, `benchmark`, `quick`, `complete`, `started_at`/`finished_at` (UTC),
    `command`, `git`/`git_at_end` (commit, dirty flag), `machine` (platform, CPU count and
    load average at `start` and `end`), `settings`, `versions`, `figures` (each: label,
    unit, which way is better, and its `values`, one per repetition) and `runs` (the
    details of every repetition). It is saved after every repetition, `complete` only at
    the end, so a run cut short says so.
    """

    def __init__(
        self,
        benchmark: str,
        out: Path,
        *,
        quick: bool,
        settings: dict[str, Any],
        versions: dict[str, Any],
    ) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "benchmark": benchmark,
            "quick": quick,
            "complete": False,
            "started_at": utc_now(),
            "finished_at": None,
            "command": ["python", "-m", f"bench.{benchmark}", *_relative_args(sys.argv[1:])],
            "git": git_state(),
            "git_at_end": None,
            "machine": {**machine(), "start": machine_now(), "end": None},
            "settings": settings,
            "versions": versions,
            "figures": {},
            "runs": [],
        }

    def figure(
        self,
        figure_id: str,
        label: str,
        unit: str,
        better: str | None,
        *,
        digits: int | None = None,
        basis: str | None = None,
    ) -> None:
        """Declare a figure (once; later calls keep the first declaration). `better` is
        "higher", "lower" or None; `basis` is set for a figure measured once by design (a
        count, a pooled percentile) and says what the single value is."""
        if figure_id in self.data["figures"]:
            return
        entry: dict[str, Any] = {"label": label, "unit": unit, "better": better, "values": []}
        if digits is not None:
            entry["digits"] = digits
        if basis is not None:
            entry["basis"] = basis
        self.data["figures"][figure_id] = entry

    def add(self, figure_id: str, value: float) -> None:
        """One repetition's value of a declared figure."""
        self.data["figures"][figure_id]["values"].append(round(float(value), 4))

    def run(self, detail: dict[str, Any]) -> None:
        """The details of one repetition (or one side of one), then save."""
        self.data["runs"].append(detail)
        self.save()

    def save(self) -> None:
        write_json(self.out, self.data)

    def finish(self) -> None:
        """The run ended normally: the end time, commit and machine state, `complete`."""
        self.data["finished_at"] = utc_now()
        self.data["git_at_end"] = git_state()
        self.data["machine"]["end"] = machine_now()
        self.data["complete"] = True
        self.save()


def ratio_values(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-repetition ratios of two sides measured in the same repetitions."""
    return [a / b for a, b in zip(numerator, denominator, strict=False) if b]


def _relative_args(args: list[str]) -> list[str]:
    """Command-line arguments with paths inside the checkout made relative to it."""
    out = []
    for arg in args:
        path = Path(arg)
        if path.is_absolute() and path.is_relative_to(ROOT):
            arg = str(path.relative_to(ROOT))
        out.append(arg)
    return out


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
