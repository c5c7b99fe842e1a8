"""What tracing costs: the drain and the HTTP enqueue with OpenTelemetry off, on, and before
the tracing code existed.

    .venv/bin/python -m bench.otel_cost [--jobs 20000] [--seconds 10] [--reps 3]
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
starts, made by the side's own `JobStore.create`, rate over first-to-last done, worker CPU
over the same window so the process's start, imports included, is not charged to its
jobs); the HTTP enqueue is `bench/http_enqueue.py`'s (`POST /v1/exports` at 64 connections
with wrk, one uvicorn worker, after a warm-up). Within each repetition every side runs
once, in an order that rotates from one repetition to the next (no side always runs first),
so the ratios off/before and on/off are taken per repetition.

Throughput on a 2-core machine moves by a few percent from run to run, more than "nothing"
can be told from. So the Python calls are counted too, once per side, with cProfile: per
enqueueing POST (the side's app in-process over httpx's ASGI transport, `--call-requests`
POSTs after a warm-up) and per job of the drain (the worker under the arq CLI, profiled;
the slope between a drain of `--call-jobs` and one of three times as many, so its start
and shutdown cancel out), with the calls into the tracing modules (`jobs/tracing/`,
`api/tracing.py`) apart.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from bench.http_enqueue import API_KEY, _answers, run_wrk, side_env
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
# Both call counters run as `python -c` in the side's checkout (the older commit has no file
# of them). PROFILE is their common part: what counts as a call into tracing, and the dump.
PROFILE = """
import cProfile, json, pstats
TRACING = ("/jobs/tracing/", "/api/tracing.py")
def counted(profile):
    stats = pstats.Stats(profile).stats
    return {
        "calls": sum(v[1] for v in stats.values()),
        "tracing_calls": sum(v[1] for k, v in stats.items() if any(t in k[0] for t in TRACING)),
    }
"""
# The worker under the arq CLI, profiled from before arq is imported; its counts are written
# when it exits (arq stops on SIGTERM and returns).
WORKER_CALLS = (
    PROFILE
    + """
import atexit, os, sys
profile = cProfile.Profile()
def dump():
    profile.disable()
    with open(os.environ["BENCH_CALLS_OUT"], "w") as out:
        json.dump(counted(profile), out)
atexit.register(dump)
sys.argv = ["arq", "bench.workers.OurWorkerSettings"]
profile.enable()
from arq.cli import cli
cli()
"""
)
CALLS_MARK = "calls: "
# N enqueueing POSTs to the side's app in-process (after a warm-up), profiled.
HTTP_CALLS = (
    PROFILE
    + """
import asyncio, hashlib, sys
import httpx
from api.main import create_app
from jobs.settings import Settings

async def main(redis_url, requests, key):
    digest = hashlib.sha256(key.encode()).hexdigest()
    settings = Settings(
        _env_file=None, environment="development", redis_url=redis_url,
        api_keys={"bench": [f"sha256:{digest}"]}, s3_endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"user_id": "u1", "format": "zip"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def post(i):
                answer = await client.post(
                    "/v1/exports", json=body, headers={**headers, "Idempotency-Key": f"k{i}"}
                )
                assert answer.status_code == 202, answer.text
            for i in range(20):
                await post(-1 - i)
            profile = cProfile.Profile()
            profile.enable()
            for i in range(requests):
                await post(i)
            profile.disable()
    print("calls: " + json.dumps(counted(profile)), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""
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


def worker_env(server: RedisServer, side: str, tree: Path, sink: SpanSink) -> dict[str, str]:
    """The environment of the side's worker (and of what queues its jobs)."""
    worker = {**OUR_ENV, "REDIS_URL": server.url, "WORKER_CONCURRENCY": str(CONCURRENCY)}
    return side_env_for(side, tree, service_free_env(worker), sink)


def queue_jobs(r: Redis, server: RedisServer, tree: Path, env: dict[str, str], jobs: int) -> None:
    """An empty Redis, then `jobs` trivial jobs made by the side's own `JobStore.create`."""
    r.flushall()
    subprocess.run(
        [str(OUR_BIN / "python"), "-c", ENQUEUE, server.url, str(jobs)],
        cwd=tree, env=env, check=True, timeout=300, capture_output=True,
    )  # fmt: skip


def drain_once(
    server: RedisServer, children: Children, side: str, tree: Path, sink: SpanSink,
    jobs: int, rep: int, timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    env = worker_env(server, side, tree, sink)
    with Redis.from_url(server.url) as r:
        queue_jobs(r, server, tree, env, jobs)
        exports_before = sink.exports
        proc = children.start(
            [str(OUR_BIN / "arq"), "bench.workers.OurWorkerSettings"], env,
            f"drain-{side}-{rep}", cwd=tree,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        first = last = 0.0
        count = first_count = 0
        cpu_first = 0.0
        while count < jobs:
            if proc.poll() is not None:
                raise RuntimeError(f"{side} worker exited ({proc.returncode}); see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side}: {count}/{jobs} jobs done after {timeout_s:g}s")
            now_count = int(r.get(DONE_KEY) or 0)
            if now_count != count:
                last = time.time()
                if not first:
                    # CPU from here on: the start and the imports are not the jobs' cost.
                    first, first_count, cpu_first = last, now_count, group_cpu_s(proc.pid)
                count = now_count
            time.sleep(SAMPLE_S)
        worker_cpu = group_cpu_s(proc.pid) - cpu_first
        children.stop(proc)  # the batch exporter flushes its spans at shutdown
    result = {
        "what": "drain",
        "side": side,
        "rep": rep,
        "jobs": jobs,
        "jobs_per_s": (jobs - first_count) / max(1e-6, last - first),
        "worker_cpu_ms_per_job": round(1000 * worker_cpu / max(1, jobs - first_count), 4),
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


def _drained(r: Redis, proc: subprocess.Popen, jobs: int) -> bool:
    return proc.poll() is not None or int(r.get(DONE_KEY) or 0) >= jobs


def worker_calls(
    server: RedisServer, children: Children, side: str, tree: Path, sink: SpanSink,
    jobs: int, timeout_s: float,
) -> dict[str, float]:  # fmt: skip
    """Python calls per job of the side's worker (all of them, and those into tracing): the
    slope between a profiled drain of `jobs` and one of three times as many."""
    counts: dict[int, dict[str, int]] = {}
    for n in (jobs, 3 * jobs):
        env = worker_env(server, side, tree, sink)
        with tempfile.TemporaryDirectory(prefix="otel-calls-") as tmp:
            out = Path(tmp) / "calls.json"
            env["BENCH_CALLS_OUT"] = str(out)
            with Redis.from_url(server.url) as r:
                queue_jobs(r, server, tree, env, n)
                proc = children.start(
                    [str(OUR_BIN / "python"), "-c", WORKER_CALLS], env, f"calls-{side}-{n}",
                    cwd=tree,
                )  # fmt: skip
                wait_for(
                    functools.partial(_drained, r, proc, n),
                    timeout_s, f"{side}'s profiled drain of {n}", 0.05,
                )  # fmt: skip
                children.stop(proc)
            if not out.exists():
                raise RuntimeError(f"{side}'s profiled worker wrote no counts; see its log")
            counts[n] = json.loads(out.read_text())
    small, large = counts[jobs], counts[3 * jobs]
    found = {key: (large[key] - small[key]) / (2 * jobs) for key in small}
    log(f"calls {side}: {found['calls']:.0f} per job, {found['tracing_calls']:.1f} into tracing")
    return found


def http_calls(
    server: RedisServer, side: str, tree: Path, sink: SpanSink, requests: int
) -> dict[str, float]:
    """Python calls per enqueueing POST of the side's app in-process (all of them, and those
    into tracing); spans go out from the exporter's own thread, which is not profiled."""
    env = side_env_for(side, tree, side_env("ours", server.url), sink)
    with Redis.from_url(server.url) as r:
        r.flushall()
    answer = subprocess.run(
        [str(OUR_BIN / "python"), "-c", HTTP_CALLS, server.url, str(requests), API_KEY],
        cwd=tree, env=env, check=True, timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in answer.stdout.splitlines() if x.startswith(CALLS_MARK))
    counted = json.loads(line.removeprefix(CALLS_MARK))
    found = {key: value / requests for key, value in counted.items()}
    log(
        f"calls {side}: {found['calls']:.0f} per request, {found['tracing_calls']:.1f} into tracing"
    )
    return found


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
    for what, per in (("job", "job"), ("request", "enqueueing POST")):
        for side in SIDES:
            recorder.figure(
                f"{side}.calls_per_{what}", f"{side}: Python calls per {per}", "calls", "lower",
                digits=1,
            )  # fmt: skip
            recorder.figure(
                f"{side}.tracing_calls_per_{what}", f"{side}: calls into tracing per {per}",
                "calls", "lower", digits=2,
            )  # fmt: skip
        for name, a, b in RATIOS:
            recorder.figure(
                f"ratio.calls_per_{what}.{name}", f"Python calls per {per} {a}/{b}", "x",
                "lower", digits=4,
            )  # fmt: skip


def record_calls(recorder: Recorder, what: str, found: dict[str, dict[str, float]]) -> None:
    """The call counts of every side (`what`: job or request) and their ratios."""
    for side in SIDES:
        recorder.add(f"{side}.calls_per_{what}", found[side]["calls"])
        recorder.add(f"{side}.tracing_calls_per_{what}", found[side]["tracing_calls"])
    for name, a, b in RATIOS:
        recorder.add(f"ratio.calls_per_{what}.{name}", found[a]["calls"] / found[b]["calls"])


def rotated(rep: int) -> tuple[str, ...]:
    """The order the sides run in, in repetition `rep` (1-based): each side first in turn."""
    shift = (rep - 1) % len(SIDES)
    return SIDES[shift:] + SIDES[:shift]


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
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--before", default="a9309e9^1", help="the commit before tracing")
    parser.add_argument("--after", default="a9309e9", help="the commit that added tracing")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of one drain (s)")
    parser.add_argument(
        "--call-jobs", type=int, default=1000, help="profiled drains of N and 3N jobs"
    )
    parser.add_argument("--call-requests", type=int, default=200, help="profiled POSTs")
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
                "call_jobs": args.call_jobs,
                "call_requests": args.call_requests,
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
            per_job = {
                side: worker_calls(
                    server, children, side, trees[side], sink, args.call_jobs, args.timeout
                )
                for side in SIDES
            }
            record_calls(recorder, "job", per_job)
            per_request = {
                side: http_calls(server, side, trees[side], sink, args.call_requests)
                for side in SIDES
            }
            record_calls(recorder, "request", per_request)
            recorder.run({"what": "calls", "per_job": per_job, "per_request": per_request})
            for rep in range(1, args.reps + 1):
                runs = []
                for side in rotated(rep):
                    result = drain_once(
                        server, children, side, trees[side], sink, args.jobs, rep, args.timeout
                    )
                    runs.append(result)
                    recorder.run(result)
                for side in rotated(rep):
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
