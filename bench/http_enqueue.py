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
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from bench.common import (
    OUR_BIN,
    RESULTS,
    ROOT,
    Children,
    MachineMeter,
    exit_on_sigterm,
    git_state,
    group_cpu_s,
    log,
    machine,
    package_versions,
    process_cpu_s,
    service_free_env,
    spread,
    wait_for,
    write_json,
)
from tests.support.services import RedisServer, free_port

DEFAULT_OUT = RESULTS / "http_enqueue.json"
LOG_DIR = RESULTS / "http_enqueue_logs"
LUA = ROOT / "bench" / "wrk" / "post.lua"
API_KEY = "bench-http-key"
WARMUP_S = 2
CONFIGS = (("ours", 1), ("ours", 2), ("bare", 1), ("bare", 2))
PATHS = {"ours": "/v1/exports", "bare": "/enqueue"}


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


async def round_trips(redis_url: str, requests: int = 50) -> dict[str, float]:
    """Redis round trips per request of each app, in-process over ASGI."""
    from api.main import create_app
    from jobs.settings import Settings

    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    settings = Settings(
        _env_file=None,
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
                "p50_ms": spread([r["latency_ms"]["p50"] for r in group]),
                "redis_commands_per_request": spread(
                    [r["redis_commands_per_request"] for r in group]
                ),
                "all_jobs_made": all(r["jobs_match_answers"] for r in group),
                "other_cpu_s": spread([r["machine"]["other_cpu_s"] for r in group]),
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    wrk_version = (
        subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, check=False)
        .stdout.split("\n")[0]
        .split(" Copyright")[0]
    )
    meta: dict[str, Any] = {
        "benchmark": "http_enqueue",
        "seconds": args.seconds,
        "connections": args.connections,
        "wrk": f"{wrk_version.strip()}; -t1 -c{args.connections} -d{args.seconds:g}s",
        "machine": machine(),
        "versions": package_versions(
            "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "arq", "redis"
        ),
        "git_at_start": git_state(),
    }
    runs: list[dict[str, Any]] = []
    server = RedisServer()
    children = Children(LOG_DIR)
    try:
        server.start()
        trips = asyncio.run(round_trips(server.url))
        meta["redis_round_trips_per_request"] = trips
        log(f"Redis round trips per request: {trips}")
        for rep in range(1, args.reps + 1):
            for side, workers in CONFIGS:
                if workers in args.workers:
                    runs.append(run_once(server, children, side, workers, args, rep))
                    write_json(args.out, {**meta, "summary": summarize(runs), "runs": runs})
    finally:
        children.stop_all()
        server.stop()
    rows = summarize(runs)
    write_json(args.out, {**meta, "summary": rows, "runs": runs})
    print(f"\nPOST enqueue, wrk -c{args.connections}, {args.seconds:g}s per run\n")
    print(table(rows, trips))
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
