"""Run every benchmark, then rebuild `bench/RESULTS.md`, its charts (`bench/charts/*.png`)
and the README's benchmark table from the results.

    bench/run.sh [--quick] [--only NAME ...] [--skip NAME ...] [--report-only]
    .venv/bin/python -m bench ...            (the same, once .venv exists)

First it installs what is missing (`bench/setup_env.py`: the `bench` extra, the Celery
virtualenv, Debian's wrk). Then it runs each benchmark as its own command, one after
another, each writing its JSON to `bench/results/<name>.json` (tracked by git: commit it
with the report) and its output to `bench/results/<name>.out` (not tracked); a benchmark
that fails is reported as failed and the others still run. Last, `bench/report.py` turns
the JSON files, and nothing else, into RESULTS.md, the PNG charts and the README's table.

`--quick` runs a tiny version of every benchmark (a few jobs, one repetition; crash
recovery without its five-minute plain-arq side) into `bench/results/quick/` (not
tracked), each JSON marked `"quick": true`, and writes its RESULTS.md and charts there,
never over the committed ones. The test suite runs it (tests/test_bench.py) so the
benchmarks cannot rot; its figures mean nothing and no target is judged on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, log


@dataclass(frozen=True)
class Step:
    """One benchmark: its module and its arguments (full run and quick run)."""

    name: str
    module: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout_s: float


# Much of a full run is seeding and exporting 100k documents through moto (three exports of
# each size, on the documents seeded once per size); see bench/README.md.
STEPS = (
    Step("http_enqueue", "bench.http_enqueue",
         ("--seconds", "10", "--reps", "3"),
         ("--seconds", "1", "--warmup", "1", "--reps", "1", "--workers", "1"), 900),
    Step("drain", "bench.drain",
         ("--jobs", "5000", "--reps", "3"),
         ("--jobs", "40", "--reps", "1"), 1200),
    Step("latency", "bench.latency",
         ("--probes", "40", "--reps", "3", "--idle", "10"),
         ("--probes", "3", "--reps", "1", "--idle", "0.5", "--quiet", "0.2"), 1500),
    Step("analysis_throughput", "bench.analysis_throughput",
         ("--jobs", "200", "--reps", "3", "--our-configs", "200/200"),
         ("--jobs", "4", "--delay", "0.1", "--reps", "1", "--our-configs", "200/200"), 1800),
    Step("crash_recovery", "bench.crash_recovery",
         ("--trials", "10"),
         ("--trials", "1", "--only", "ours", "--lease", "4"), 1500),
    Step("export_memory", "bench.export_memory",
         ("--docs", "10000", "100000", "--reps", "3"),
         ("--docs", "30", "--reps", "1"), 7200),
    Step("webhook_throughput", "bench.webhook_throughput",
         ("--events", "1000", "--endpoints", "10", "--concurrency", "20", "--reps", "3"),
         ("--events", "5", "--endpoints", "2", "--concurrency", "20", "--reps", "1"), 900),
    # The FIFO sides wait for a backlog of 2,000 one-second calls at 50 at once (40 s each);
    # the budget sides take 300 calls at 120 a minute (over two minutes each).
    # Tracing off, on and before it existed: two checkouts of pinned commits (bench/otel_cost.py).
    Step("otel_cost", "bench.otel_cost",
         ("--jobs", "20000", "--seconds", "10", "--reps", "5", "--call-jobs", "2000"),
         ("--jobs", "40", "--seconds", "1", "--warmup", "1", "--reps", "1", "--call-jobs", "20",
          "--call-requests", "10"), 2400),
    Step("fairness", "bench.fairness",
         ("--backlogs", "200", "2000", "--quiet-jobs", "20", "--quiet-over", "10",
          "--delay", "1.0", "--concurrency", "50", "--budget-jobs", "300", "--budget-rpm", "120",
          "--budget-burst", "10", "--reps", "3"),
         ("--backlogs", "20", "60", "--quiet-jobs", "4", "--quiet-over", "1", "--delay", "0.2",
          "--concurrency", "10", "--budget-jobs", "24", "--reps", "1"), 4500),
    # Drains of 3,000 jobs by 1, 2 and 4 worker processes (ours, raw arq, SAQ; ours with a
    # replica at 4), wrk for 5 s at 1, 2 and 4 uvicorn workers with and without WAIT.
    Step("scale", "bench.scale",
         ("--jobs", "3000", "--reps", "3"),
         ("--jobs", "40", "--workers", "2", "--replica-workers", "1", "--http-workers", "1",
          "--seconds", "1", "--reps", "1"), 900),
)  # fmt: skip
NAMES = tuple(step.name for step in STEPS)
RUNLOG = "runlog.json"  # which steps ran, their exit codes and times (not tracked)


def load_runlog(results: Path) -> dict[str, dict[str, Any]]:
    path = results / RUNLOG
    return json.loads(path.read_text()) if path.exists() else {}


def save_runlog(results: Path, ran: dict[str, dict[str, Any]]) -> None:
    (results / RUNLOG).write_text(json.dumps(ran, indent=2) + "\n")


def run_step(step: Step, quick: bool, results: Path) -> dict[str, object]:
    """Run one benchmark as its own process; its JSON goes to `results/<name>.json`."""
    out = results / f"{step.name}.json"
    output = results / f"{step.name}.out"
    args = [sys.executable, "-m", step.module, *(step.quick if quick else step.full)]
    args += ["--out", str(out)] + (["--quick"] if quick else [])
    log(f"{step.name}: {' '.join(args[1:])}")
    clock = time.monotonic()
    with open(output, "wb") as sink:
        try:
            proc = subprocess.run(
                args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, timeout=step.timeout_s,
                check=False,
            )  # fmt: skip
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = -1
    seconds = time.monotonic() - clock
    log(f"{step.name}: {'ok' if code == 0 else f'FAILED ({code})'} in {seconds:.0f}s")
    return {"name": step.name, "exit": code, "seconds": round(seconds, 1), "args": args[3:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run into results/quick/")
    parser.add_argument("--only", nargs="+", choices=NAMES)
    parser.add_argument("--skip", nargs="+", choices=NAMES, default=[])
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild the report (python -m bench.report)",
    )
    parser.add_argument("--no-setup", action="store_true", help="do not install anything")
    args = parser.parse_args(argv)
    results = RESULTS / "quick" if args.quick else RESULTS
    report_dir = results if args.quick else ROOT / "bench"
    results.mkdir(parents=True, exist_ok=True)
    from bench import report

    if not args.report_only:
        if not args.no_setup:
            from bench.setup_env import ensure

            ensure()
        steps = [
            s for s in STEPS if (not args.only or s.name in args.only) and s.name not in args.skip
        ]
        clock = time.monotonic()
        ran = load_runlog(results)
        for step in steps:
            ran[step.name] = run_step(step, args.quick, results)
            save_runlog(results, ran)
        log(f"all benchmarks done in {(time.monotonic() - clock) / 60:.1f} min")
    written = report.write(
        results, report_dir, quick=args.quick, readme=None if args.quick else report.README
    )
    log(f"wrote {written}")
    failed = [name for name, step in load_runlog(results).items() if step["exit"] != 0]
    if failed:
        log(f"failed: {', '.join(failed)} (see bench/results/<name>.out)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
