"""HTTP enqueue rate and latency at 64 connections, with wrk: `POST /v1/exports` (bearer
key, job record, `Idempotency-Key`) against a bare FastAPI endpoint that only calls arq's
`enqueue_job` (`bench/bare_app.py`), each under uvicorn with 1 and 2 worker processes.

    .venv/bin/python -m bench.http_enqueue [--seconds 10] [--reps 3] [--connections 64]

Each run: a private redis-server (flushed), `uvicorn <app> --workers N --no-access-log`
on 127.0.0.1, a 2 s wrk warm-up, then `wrk -t1 -c64 -d<seconds>s` with `bench/wrk/post.lua`
(a unique `Idempotency-Key` per request, so every request makes a job). Our API runs at
its defaults (`LOG_LEVEL=INFO`), with one account key given as a SHA-256 digest. After the
run the jobs are counted in Redis (every 202 must have made exactly one job) and Redis's
`INFO commandstats` gives the commands per request (Lua's inner calls included).

Redis round trips per request are counted separately, in-process: the app runs over
httpx's ASGI transport and every write to a Redis connection is counted (a pipeline or a
script is one write).

Within each repetition every configuration runs once, so ours/bare is taken per repetition
and per uvicorn worker count. Everything goes to one JSON file (`bench.common.Recorder`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
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
    spread,
    wait_for,
)
from tests.support.services import RedisServer, free_port

DEFAULT_OUT = RESULTS / "http_enqueue.json"
LOG_DIR = RESULTS / "http_enqueue_logs"
LUA = ROOT / "bench" / "wrk" / "post.lua"
API_KEY = "bench-http-key"
WARMUP_S = 2
CONFIGS = (("ours", 1), ("ours", 2), ("bare", 1), ("bare", 2))
PATHS = {"ours": "/v1/exports", "bare": "/enqueue"}
ROUND_TRIP_REQUESTS = 50


def side_env(side: str, redis_url: str) -> dict[str, str]:
    if side == "bare":
        return service_free_env({"REDIS_URL": redis_url})
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return service_free_env(
        {
            "REDIS_URL": redis_url,
            "API_KEYS": json.dumps({"bench": [f"sha256:{digest}"]}),
            # The API builds an S3 client at start; POST /v1/exports never calls S3.
            "S3_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (bench/run.sh does)")
    return found


def run_wrk(url: str, seconds: float, connections: int, side: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_PATH": PATHS[side],
        "BENCH_KEY": API_KEY if side == "ours" else "",
        "BENCH_PREFIX": uuid.uuid4().hex,
    }
    answer = subprocess.run(
        # wrk takes whole seconds.
        [wrk_binary(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(LUA), url],
        capture_output=True, text=True, env=env, timeout=seconds + 60, check=False,
    )  # fmt: skip
    if answer.returncode != 0:
        raise RuntimeError(f"wrk failed: {answer.stderr[-2000:]}")
    line = [ln for ln in answer.stdout.splitlines() if ln.startswith('{"requests"')][-1]
    return json.loads(line)


def command_calls(r: Redis) -> int:
    return sum(v["calls"] for v in r.info("commandstats").values())


def jobs_made(r: Redis, side: str) -> int:
    return int(r.zcard("lr:jobs:all" if side == "ours" else "arq:queue"))


def run_once(
    server: RedisServer, children: Children, side: str, workers: int, args: Any, rep: int
) -> dict[str, Any]:
    with Redis.from_url(server.url) as r:
        r.flushall()
        port = free_port()
        app = "api.main:app" if side == "ours" else "bench.bare_app:app"
        proc = children.start(
            [str(OUR_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--no-access-log"],
            side_env(side, server.url), f"{side}-{workers}-{rep}",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        probe = "/health/live" if side == "ours" else "/openapi.json"
        wait_for(lambda: _answers(url + probe), 60, f"{app} on {port}", 0.2)
        warm = run_wrk(url, args.warmup, args.connections, side)
        calls_before, made_before = command_calls(r), jobs_made(r, side)
        meter = MachineMeter().start()
        cpu_before = group_cpu_s(proc.pid)
        redis_before = process_cpu_s(server.proc.pid) if server.proc else 0.0
        measured = run_wrk(url, args.seconds, args.connections, side)
        app_cpu = group_cpu_s(proc.pid) - cpu_before
        redis_cpu = (process_cpu_s(server.proc.pid) if server.proc else 0.0) - redis_before
        machine_use = meter.read(app_cpu + redis_cpu)
        calls = command_calls(r) - calls_before
        made = jobs_made(r, side) - made_before
        time.sleep(0.5)  # requests wrk cut off at its end may still be finishing
        made_total = jobs_made(r, side)
    children.stop(proc)
    requests = measured["requests"]
    errors = measured["errors"]
    ok = requests - errors["status"]
    answered_total = ok + warm["requests"] - warm["errors"]["status"]
    result = {
        "side": side,
        "uvicorn_workers": workers,
        "rep": rep,
        "connections": args.connections,
        "seconds": measured["duration_us"] / 1e6,
        "requests": requests,
        "errors": errors,
        "requests_per_s": requests / (measured["duration_us"] / 1e6),
        "latency_ms": {k: v / 1000 for k, v in measured["latency_us"].items()},
        "jobs_made": made,
        # Every 202 made one job; requests wrk cut off when it stopped may have made one too.
        "jobs_match_answers": all(v == 0 for v in errors.values())
        and answered_total <= made_total <= answered_total + 2 * args.connections,
        "jobs_made_total": made_total,
        "answered_total": answered_total,
        "redis_commands_per_request": calls / max(1, requests),
        "cpu_s": {"app": round(app_cpu, 2), "redis": round(redis_cpu, 2)},
        "machine": machine_use,
        "warmup_requests": warm["requests"],
    }
    log(
        f"{side} x{workers} rep {rep}: {result['requests_per_s']:.0f} req/s, p99 "
        f"{result['latency_ms']['p99']:.1f} ms, errors {errors}, jobs {made}/{ok}, "
        f"{result['redis_commands_per_request']:.1f} Redis commands/request"
    )
    return result


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@asynccontextmanager
async def counting_redis_writes() -> AsyncIterator[Callable[[], int]]:
    """Count every write to any Redis connection (one per command, pipeline or script)."""
    from redis.asyncio.connection import AbstractConnection

    original = AbstractConnection.send_packed_command
    count = 0

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal count
        count += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield lambda: count
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def round_trips(redis_url: str, requests: int = ROUND_TRIP_REQUESTS) -> dict[str, float]:
    """Redis round trips per request of each app, in-process over ASGI."""
    from api.main import create_app
    from jobs.settings import Settings

    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    settings = Settings(
        _env_file=None,
        environment="development",
        redis_url=redis_url,
        api_keys={"bench": [f"sha256:{digest}"]},
        s3_endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    os.environ["REDIS_URL"] = redis_url
    from bench.bare_app import app as bare

    found: dict[str, float] = {}
    for side, app in (("ours", create_app(settings)), ("bare", bare)):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {"Authorization": f"Bearer {API_KEY}"}
                body = {"user_id": "u1", "format": "zip"}
                await client.post(PATHS[side], json=body, headers=headers)  # connect, load
                async with counting_redis_writes() as writes:
                    for i in range(requests):
                        answer = await client.post(
                            PATHS[side], json=body, headers={**headers, "Idempotency-Key": f"k{i}"}
                        )
                        assert answer.status_code == 202, answer.text
                    found[side] = writes() / requests
                # The same key and body again: the idempotent replay.
                if side == "ours":
                    async with counting_redis_writes() as writes:
                        await client.post(
                            PATHS[side], json=body, headers={**headers, "Idempotency-Key": "k0"}
                        )
                        found["ours_replay"] = writes()
    return found


def side_id(side: str, workers: int) -> str:
    return f"{side}-w{workers}"


def side_settings(side: str, workers: int) -> str:
    what = "`POST /v1/exports`" if side == "ours" else "bare `POST /enqueue` (`enqueue_job`)"
    return f"{what}, uvicorn --workers {workers}"


def declare(recorder: Recorder, configs: list[tuple[str, int]]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side, workers in configs:
        sid = side_id(side, workers)
        recorder.figure(f"{sid}.requests_per_s", f"{sid}: requests/s", "requests/s", "higher")
        recorder.figure(f"{sid}.p50_ms", f"{sid}: p50", "ms", "lower", digits=1)
        recorder.figure(f"{sid}.p99_ms", f"{sid}: p99", "ms", "lower", digits=1)
        recorder.figure(
            f"{sid}.redis_commands_per_request", f"{sid}: Redis commands/request", "commands",
            None, digits=1,
        )  # fmt: skip
    for workers in sorted({w for _, w in configs}):
        if ("ours", workers) in configs and ("bare", workers) in configs:
            recorder.figure(
                f"ratio.w{workers}.ours_over_bare",
                f"ours/bare requests/s, uvicorn --workers {workers}",
                "x", "higher", digits=2,
            )  # fmt: skip
    recorder.figure("other_cpu_s", "CPU other processes used per run", "s", None, digits=1)


def record_round_trips(recorder: Recorder, trips: dict[str, float]) -> None:
    """Round trips per request: counted once, in-process (deterministic, no repetitions)."""
    basis = f"counted in-process over {ROUND_TRIP_REQUESTS} requests"
    for key, label, how in (
        ("ours", "ours: Redis round trips per request", basis),
        ("bare", "bare `enqueue_job`: Redis round trips per request", basis),
        ("ours_replay", "ours: Redis round trips of an idempotent replay", "one replay"),
    ):
        if key in trips:
            figure = f"{key.replace('_', '-')}.redis_round_trips"
            recorder.figure(figure, label, "round trips", "lower", digits=1, basis=how)
            recorder.add(figure, trips[key])
    recorder.save()


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    sid = side_id(result["side"], result["uvicorn_workers"])
    recorder.add(f"{sid}.requests_per_s", result["requests_per_s"])
    recorder.add(f"{sid}.p50_ms", result["latency_ms"]["p50"])
    recorder.add(f"{sid}.p99_ms", result["latency_ms"]["p99"])
    recorder.add(f"{sid}.redis_commands_per_request", result["redis_commands_per_request"])
    recorder.add("other_cpu_s", result["machine"]["other_cpu_s"])


def record_ratios(recorder: Recorder, runs: list[dict[str, Any]], rep: int) -> None:
    rates = {
        (r["side"], r["uvicorn_workers"]): r["requests_per_s"] for r in runs if r["rep"] == rep
    }
    for (side, workers), rate in rates.items():
        if side == "ours" and ("bare", workers) in rates:
            for value in ratio_values([rate], [rates[("bare", workers)]]):
                recorder.add(f"ratio.w{workers}.ours_over_bare", value)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for side, workers in CONFIGS:
        group = [r for r in runs if r["side"] == side and r["uvicorn_workers"] == workers]
        if not group:
            continue
        rows.append(
            {
                "side": side,
                "uvicorn_workers": workers,
                "requests_per_s": spread([r["requests_per_s"] for r in group]),
                "p99_ms": spread([r["latency_ms"]["p99"] for r in group]),
                "all_jobs_made": all(r["jobs_match_answers"] for r in group),
            }
        )
    return rows


def table(rows: list[dict[str, Any]], trips: dict[str, float]) -> str:
    lines = [
        "| endpoint | uvicorn workers | requests/s | p99 ms | Redis round trips | jobs ok |",
        "|---|---:|---|---|---:|---|",
    ]
    for row in rows:
        rate, p99 = row["requests_per_s"], row["p99_ms"]
        lines.append(
            f"| {row['side']} | {row['uvicorn_workers']} "
            f"| {rate['median']:.0f} [{rate['min']:.0f}-{rate['max']:.0f}] "
            f"| {p99['median']:.1f} [{p99['min']:.1f}-{p99['max']:.1f}] "
            f"| {trips.get(row['side'], float('nan')):.1f} "
            f"| {'yes' if row['all_jobs_made'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=WARMUP_S, help="wrk warm-up (s)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    wrk_version = (
        subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, check=False)
        .stdout.split("\n")[0]
        .split(" Copyright")[0]
    )
    configs = [(side, w) for side, w in CONFIGS if w in args.workers]
    recorder = Recorder(
        "http_enqueue",
        args.out,
        quick=args.quick,
        settings={
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "reps": args.reps,
            "connections": args.connections,
            "wrk": f"-t1 -c{args.connections} -d{args.seconds}s",
            "api": "our API at its defaults (LOG_LEVEL=INFO), one account key as a SHA-256 "
            "digest, a unique Idempotency-Key per request",
            "sides": {side_id(s, w): side_settings(s, w) for s, w in configs},
        },
        versions={**our_versions(), "wrk": wrk_version.strip()},
    )
    declare(recorder, configs)
    runs: list[dict[str, Any]] = []
    server = RedisServer()
    children = Children(LOG_DIR)
    try:
        server.start()
        trips = asyncio.run(round_trips(server.url))
        record_round_trips(recorder, trips)
        log(f"Redis round trips per request: {trips}")
        for rep in range(1, args.reps + 1):
            for side, workers in configs:
                result = run_once(server, children, side, workers, args, rep)
                runs.append(result)
                record(recorder, result)
                if (side, workers) == configs[-1]:
                    record_ratios(recorder, runs, rep)
                recorder.run(result)
    finally:
        children.stop_all()
        server.stop()
    recorder.finish()
    print(f"\nPOST enqueue, wrk -c{args.connections}, {args.seconds:g}s per run\n")
    print(table(summarize(runs), trips))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
