"""What tracing costs: the drain and the HTTP enqueue with OpenTelemetry off, on, and before
the tracing code existed.

    .venv/bin/python -m bench.otel_cost [--jobs 5000] [--seconds 10] [--reps 3]
        [--before REF] [--after REF]

Three sides, each run from its own checkout of this repository (a detached `git worktree`
made for the run under a temporary directory, removed at the end) with this `.venv`:

- `before`: the commit before tracing was merged (`--before`, default `a9309e9^1`, the
  first parent of the merge of the `otel` branch);
- `off`: the commit that merged tracing (`--after`, default `a9309e9`), no `OTEL_*`
  variable set: what every deployment that does not trace runs;
- `on`: the same commit exporting every span over OTLP/HTTP
  (`OTEL_EXPORTER_OTLP_ENDPOINT`) to a sink in this process that answers 200 and counts
  what it received, so the figure is the cost of making, batching and sending spans.

Pinning both commits measures the tracing change alone: nothing else differs between the
sides. The drain is `bench/drain.py`'s (N trivial jobs queued before ONE worker process
starts, made by the side's own `JobStore.create`, rate over first-to-last done); the HTTP
enqueue is `bench/http_enqueue.py`'s (`POST /v1/exports` at 64 connections with wrk, one
uvicorn worker, after a warm-up). Within each repetition every side runs once, so the
ratios off/before and on/off are taken per repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from redis import Redis

from bench.common import (
    OUR_BIN,
    RESULTS,
    ROOT,
    Children,
    MachineMeter,
    Recorder,
    add_common_args,
    exit_on_sigterm,
    group_cpu_s,
    log,
    our_versions,
    process_cpu_s,
    ratio_values,
    service_free_env,
    wait_for,
)
from bench.drain import OUR_ENV, SAMPLE_S
from bench.http_enqueue import _answers, run_wrk, side_env
from bench.workers import DONE_KEY
from tests.support.services import RedisServer, free_port

DEFAULT_OUT = RESULTS / "otel_cost.json"
LOG_DIR = RESULTS / "otel_cost_logs"
SIDES = ("before", "off", "on")
CONCURRENCY = 100
CONNECTIONS = 64
RATIOS = (("off_over_before", "off", "before"), ("on_over_off", "on", "off"))
# The enqueue runs in a child process from the side's own checkout, with its own JobStore.
ENQUEUE = (
    "import asyncio, sys\n"
    "from bench.drain import enqueue_ours\n"
    "asyncio.run(enqueue_ours(sys.argv[1], int(sys.argv[2])))\n"
)


class SpanSink:
    """An OTLP/HTTP endpoint that answers 200 to every export and counts them."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                sink.exports += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to put in OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SpanSink:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def checkouts(before: str, after: str) -> Iterator[dict[str, Path]]:
    """A detached worktree of each commit, removed afterwards: side -> its directory."""
    with tempfile.TemporaryDirectory(prefix="otel-cost-") as tmp:
        trees = {"before": Path(tmp) / "before", "after": Path(tmp) / "after"}
        for name, ref in (("before", before), ("after", after)):
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                 str(trees[name]), ref],
                check=True, timeout=120,
            )  # fmt: skip
        try:
            yield {"before": trees["before"], "off": trees["after"], "on": trees["after"]}
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False, timeout=120,
                )  # fmt: skip


def commit_of(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


def side_env_for(side: str, tree: Path, base: dict[str, str], sink: SpanSink) -> dict[str, str]:
    """`base` (a service-free environment) run from `tree`, tracing on for the `on` side."""
    env = {k: v for k, v in base.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(tree)
    if side == "on":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        env["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
    return env


def drain_once(
    server: RedisServer, children: Children, side: str, tree: Path, sink: SpanSink,
    jobs: int, rep: int, timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    env = side_env_for(
        side,
        tree,
        service_free_env(
            {**OUR_ENV, "REDIS_URL": server.url, "WORKER_CONCURRENCY": str(CONCURRENCY)}
        ),
        sink,
    )
    with Redis.from_url(server.url) as r:
        r.flushall()
        subprocess.run(
            [str(OUR_BIN / "python"), "-c", ENQUEUE, server.url, str(jobs)],
            cwd=tree, env=env, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
        exports_before = sink.exports
        proc = children.start(
            [str(OUR_BIN / "arq"), "bench.workers.OurWorkerSettings"], env,
            f"drain-{side}-{rep}", cwd=tree,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        first = last = 0.0
        count = 0
        while count < jobs:
            if proc.poll() is not None:
                raise RuntimeError(f"{side} worker exited ({proc.returncode}); see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side}: {count}/{jobs} jobs done after {timeout_s:g}s")
            now_count = int(r.get(DONE_KEY) or 0)
            if now_count != count:
                last = time.time()
                first = first or last
                count = now_count
            time.sleep(SAMPLE_S)
        worker_cpu = group_cpu_s(proc.pid)
        children.stop(proc)  # the batch exporter flushes its spans at shutdown
    result = {
        "what": "drain",
        "side": side,
        "rep": rep,
        "jobs": jobs,
        "jobs_per_s": (jobs - 1) / max(1e-6, last - first),
        "worker_cpu_ms_per_job": round(1000 * worker_cpu / jobs, 3),
        "span_exports": sink.exports - exports_before,
    }
    log(
        f"drain {side} rep {rep}: {result['jobs_per_s']:.0f} jobs/s, "
        f"{result['worker_cpu_ms_per_job']:.3f} ms CPU/job, {result['span_exports']} exports"
    )
    return result


def http_once(
    server: RedisServer, children: Children, side: str, tree: Path, sink: SpanSink,
    args: argparse.Namespace, rep: int,
) -> dict[str, Any]:  # fmt: skip
    env = side_env_for(side, tree, side_env("ours", server.url), sink)
    with Redis.from_url(server.url) as r:
        r.flushall()
        port = free_port()
        proc = children.start(
            [str(OUR_BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--no-access-log"],
            env, f"http-{side}-{rep}", cwd=tree,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/health/live"), 60, f"the API on {port}", 0.2)
        run_wrk(url, args.warmup, CONNECTIONS, "ours")
        exports_before = sink.exports
        meter = MachineMeter().start()
        cpu_before = group_cpu_s(proc.pid)
        redis_before = process_cpu_s(server.proc.pid) if server.proc else 0.0
        measured = run_wrk(url, args.seconds, CONNECTIONS, "ours")
        app_cpu = group_cpu_s(proc.pid) - cpu_before
        redis_cpu = (process_cpu_s(server.proc.pid) if server.proc else 0.0) - redis_before
        machine_use = meter.read(app_cpu + redis_cpu)
        children.stop(proc)
    seconds = measured["duration_us"] / 1e6
    result = {
        "what": "http",
        "side": side,
        "rep": rep,
        "requests": measured["requests"],
        "errors": measured["errors"],
        "requests_per_s": measured["requests"] / seconds,
        "p99_ms": measured["latency_us"]["p99"] / 1000,
        "app_cpu_ms_per_request": round(1000 * app_cpu / max(1, measured["requests"]), 4),
        "span_exports": sink.exports - exports_before,
        "machine": machine_use,
    }
    log(
        f"http {side} rep {rep}: {result['requests_per_s']:.0f} req/s, p99 "
        f"{result['p99_ms']:.1f} ms, errors {measured['errors']}, "
        f"{result['span_exports']} exports"
    )
    return result


def declare(recorder: Recorder) -> None:
    """The figures, in the order the report lists them."""
    for side in SIDES:
        recorder.figure(f"{side}.drain_jobs_per_s", f"{side}: drain jobs/s", "jobs/s", "higher")
        recorder.figure(
            f"{side}.drain_cpu_ms_per_job", f"{side}: worker CPU per job", "ms", "lower", digits=3
        )
        recorder.figure(f"{side}.http_requests_per_s", f"{side}: requests/s", "req/s", "higher")
        recorder.figure(f"{side}.http_p99_ms", f"{side}: p99", "ms", "lower", digits=1)
        recorder.figure(
            f"{side}.http_cpu_ms_per_request", f"{side}: API CPU per request", "ms", "lower",
            digits=3,
        )  # fmt: skip
    for name, a, b in RATIOS:
        recorder.figure(f"ratio.drain.{name}", f"drain jobs/s {a}/{b}", "x", "higher", digits=3)
        recorder.figure(f"ratio.http.{name}", f"requests/s {a}/{b}", "x", "higher", digits=3)


def record_rep(recorder: Recorder, runs: list[dict[str, Any]]) -> None:
    """One repetition's figures (every side ran once in it) and its ratios."""
    by = {(r["what"], r["side"]): r for r in runs}
    for side in SIDES:
        drain, http = by[("drain", side)], by[("http", side)]
        recorder.add(f"{side}.drain_jobs_per_s", drain["jobs_per_s"])
        recorder.add(f"{side}.drain_cpu_ms_per_job", drain["worker_cpu_ms_per_job"])
        recorder.add(f"{side}.http_requests_per_s", http["requests_per_s"])
        recorder.add(f"{side}.http_p99_ms", http["p99_ms"])
        recorder.add(f"{side}.http_cpu_ms_per_request", http["app_cpu_ms_per_request"])
    for name, a, b in RATIOS:
        for what, figure in (("drain", "jobs_per_s"), ("http", "requests_per_s")):
            for value in ratio_values([by[(what, a)][figure]], [by[(what, b)][figure]]):
                recorder.add(f"ratio.{what}.{name}", value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--before", default="a9309e9^1", help="the commit before tracing")
    parser.add_argument("--after", default="a9309e9", help="the commit that added tracing")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of one drain (s)")
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    server = RedisServer()
    children = Children(LOG_DIR)
    with checkouts(args.before, args.after) as trees, SpanSink() as sink:
        recorder = Recorder(
            "otel_cost",
            args.out,
            quick=args.quick,
            settings={
                "jobs": args.jobs,
                "seconds": args.seconds,
                "reps": args.reps,
                "connections": CONNECTIONS,
                "worker_concurrency": CONCURRENCY,
                "commits": {side: commit_of(tree) for side, tree in trees.items()},
                "sides": {
                    "before": "the commit before tracing",
                    "off": "the commit that added tracing, no OTEL_* variable",
                    "on": "the same, OTEL_EXPORTER_OTLP_ENDPOINT set (every span exported)",
                },
            },
            versions={"ours": our_versions("opentelemetry-sdk")},
        )
        declare(recorder)
        try:
            server.start()
            for rep in range(1, args.reps + 1):
                runs = []
                for side in SIDES:
                    result = drain_once(
                        server, children, side, trees[side], sink, args.jobs, rep, args.timeout
                    )
                    runs.append(result)
                    recorder.run(result)
                for side in SIDES:
                    result = http_once(server, children, side, trees[side], sink, args, rep)
                    runs.append(result)
                    recorder.run(result)
                record_rep(recorder, runs)
        finally:
            children.stop_all()
            server.stop()
        recorder.finish()
    print(json.dumps({k: v["values"] for k, v in recorder.data["figures"].items()}, indent=1))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
