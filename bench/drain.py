"""Worker drain rate: N trivial jobs, all queued before ONE worker process starts, drained by
our job layer and by its peers.

    .venv/bin/python -m bench.drain [--jobs 5000] [--reps 3] [--only SIDE ...] [--out PATH]

The trivial job is the same everywhere: one `INCR bench:done` on the worker's own Redis
connection. Sides (each against a private redis-server on a free port, flushed per run):

- `ours`: `arq bench.workers.OurWorkerSettings` (this service's worker: job records, leases,
  metrics, logs) with `WORKER_CONCURRENCY=100`, everything else at its default (fair
  scheduling on, so its cost is in the figure); jobs made with `JobStore.create`, as the API
  makes them. `ours-defaults`: the same at
  `WORKER_CONCURRENCY=20`.
- `arq-tuned`: arq 0.28 with `max_jobs=100`, `poll_delay=0.01` (JSON jobs; arq keeps its
  default one-hour results); jobs made with `enqueue_job`.
- `saq`: SAQ 0.26 (`saq bench.saq_worker.settings`) at `concurrency=100`; `queue.enqueue`.
- `celery`: the Celery recipe (acks late, prefetch 1, Redis broker and result backend) from
  `bench/.venv-celery`, as the recipe runs it: Celery's default prefork pool at its default
  concurrency (one process per CPU); `noop.delay()`.

The benchmark polls `bench:done` every 5 ms from the worker's spawn. drain rate = (N - 1) /
(time the count reached N - time it first moved): start-up is not in it. Also recorded: the
worker's spawn-to-first-job time, the steady rate between 10% and 90% done, and the CPU
seconds of the worker (its whole process group), of Redis and of the rest of the machine.

The sides run one after another within each repetition, so the ratios ours/SAQ,
ours/arq-tuned and ours/Celery are taken per repetition. Everything goes to one JSON file
(`bench.common.Recorder`), saved after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any

from arq.connections import RedisSettings, create_pool
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench.common import (
    CELERY_BIN,
    OUR_BIN,
    RESULTS,
    Children,
    MachineMeter,
    Recorder,
    add_common_args,
    celery_pool_settings,
    celery_versions,
    celery_worker_command,
    exit_on_sigterm,
    group_cpu_s,
    log,
    our_versions,
    process_cpu_s,
    ratio_values,
    require_celery_venv,
    service_free_env,
    spread,
)
from bench.workers import (
    ARQ_TUNED_MAX_JOBS,
    ARQ_TUNED_POLL_S,
    BENCH_REGISTRY,
    DONE_KEY,
    OUR_NOOP_KIND,
    PLAIN_NOOP,
    json_dumps,
)
from jobs.engine.store import JobStore
from jobs.settings import Settings
from tests.support.services import RedisServer

DEFAULT_OUT = RESULTS / "drain.json"
LOG_DIR = RESULTS / "drain_logs"
SIDES = ("ours", "ours-defaults", "arq-tuned", "saq", "celery")
CONCURRENCY = 100
# Fair scheduling is on by default: the drain measures what it costs (issue 12's target).
FAIR = str(Settings.model_fields["fair_scheduling"].default).lower()
SAMPLE_S = 0.005
STEADY_WINDOW = (10, 90)  # percent done: the steady rate is measured between these marks
# (ratio figure, numerator side, denominator side), taken within each repetition
RATIOS = (
    ("ratio.ours_over_saq", "ours", "saq"),
    ("ratio.ours_over_arq_tuned", "ours", "arq-tuned"),
    ("ratio.ours_over_celery", "ours", "celery"),
)
# What our worker gets besides its defaults: the Redis, dummy S3 settings (it builds a client
# at start; the trivial job never calls S3) and no metrics server.
OUR_ENV = {
    "ENVIRONMENT": "development",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "WORKER_METRICS_PORT": "0",
}


def side_settings(side: str) -> str:
    """The side's settings, as the report shows them."""
    return {
        "ours": f"WORKER_CONCURRENCY={CONCURRENCY}, FAIR_SCHEDULING={FAIR} (its default), "
        "rest default",
        "ours-defaults": "defaults (WORKER_CONCURRENCY=20)",
        "arq-tuned": f"max_jobs={ARQ_TUNED_MAX_JOBS}, poll_delay={ARQ_TUNED_POLL_S}",
        "saq": f"concurrency={CONCURRENCY}",
        "celery": f"the recipe: {celery_pool_settings()}",
    }[side]


def our_settings(redis_url: str, concurrency: int) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        worker_concurrency=concurrency,
        **{k.lower(): v for k, v in OUR_ENV.items()},  # type: ignore[arg-type]
    )


async def _gather_in_chunks(jobs: int, make: Callable[[int], Any], chunk: int = 200) -> None:
    for start in range(0, jobs, chunk):
        await asyncio.gather(*(make(i) for i in range(start, min(jobs, start + chunk))))


async def enqueue_ours(redis_url: str, jobs: int) -> None:
    redis = AsyncRedis.from_url(redis_url)
    try:
        store = JobStore(redis, our_settings(redis_url, CONCURRENCY), BENCH_REGISTRY)
        await _gather_in_chunks(
            jobs, lambda _i: store.create(kind=OUR_NOOP_KIND, account="bench", args={})
        )
    finally:
        await redis.aclose()


async def enqueue_arq(redis_url: str, jobs: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), job_serializer=json_dumps)
    try:
        await _gather_in_chunks(jobs, lambda _i: pool.enqueue_job(PLAIN_NOOP))
    finally:
        await pool.aclose()


async def enqueue_saq(redis_url: str, jobs: int) -> None:
    from bench.saq_worker import queue

    q = queue(redis_url)
    await q.connect()
    try:
        await _gather_in_chunks(jobs, lambda _i: q.enqueue("noop"))
    finally:
        await q.disconnect()


def celery_env(redis_url_base: str) -> dict[str, str]:
    """The Celery recipe's environment: broker db 0, results db 1, marks in db 0."""
    return service_free_env(
        {
            "CELERY_BROKER_URL": f"{redis_url_base}/0",
            "CELERY_RESULT_BACKEND": f"{redis_url_base}/1",
            "BENCH_TIMES_URL": f"{redis_url_base}/0",
        }
    )


def enqueue_celery(redis_url_base: str, jobs: int) -> None:
    answer = subprocess.run(
        [str(CELERY_BIN / "python"), "-m", "bench.celery_recipe", "--noop", str(jobs)],
        cwd=RESULTS.parents[1],
        env=celery_env(redis_url_base),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"the Celery enqueuer failed: {answer.stderr[-2000:]}")


def worker_command(side: str, redis_url: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start one worker process of `side`."""
    base = redis_url.rsplit("/", 1)[0]
    if side in ("ours", "ours-defaults"):
        env = {**OUR_ENV, "REDIS_URL": redis_url}
        if side == "ours":
            env["WORKER_CONCURRENCY"] = str(CONCURRENCY)
        return [str(OUR_BIN / "arq"), "bench.workers.OurWorkerSettings"], service_free_env(env)
    if side == "arq-tuned":
        env = service_free_env({"REDIS_URL": redis_url})
        return [str(OUR_BIN / "arq"), "bench.workers.TunedArqWorkerSettings"], env
    if side == "saq":
        env = service_free_env({"REDIS_URL": redis_url, "SAQ_CONCURRENCY": str(CONCURRENCY)})
        return [str(OUR_BIN / "saq"), "bench.saq_worker.settings"], env
    if side == "celery":
        return celery_worker_command(), celery_env(base)
    raise ValueError(side)


def enqueue(side: str, redis_url: str, jobs: int) -> None:
    if side in ("ours", "ours-defaults"):
        asyncio.run(enqueue_ours(redis_url, jobs))
    elif side == "arq-tuned":
        asyncio.run(enqueue_arq(redis_url, jobs))
    elif side == "saq":
        asyncio.run(enqueue_saq(redis_url, jobs))
    else:
        enqueue_celery(redis_url.rsplit("/", 1)[0], jobs)


def _time_at(progress: list[tuple[float, int]], count: int) -> float:
    """The first sample time at which the count had reached `count`."""
    return next(t for t, c in progress if c >= count)


def run_once(
    server: RedisServer, children: Children, side: str, jobs: int, rep: int, timeout_s: float
) -> dict[str, Any]:
    redis_url = server.url
    with Redis.from_url(redis_url) as r:
        r.flushall()
        clock = time.monotonic()
        enqueue(side, redis_url, jobs)
        enqueue_s = time.monotonic() - clock
        args, env = worker_command(side, redis_url)
        meter = MachineMeter().start()
        redis_cpu_before = process_cpu_s(server.proc.pid) if server.proc else 0.0
        proc = children.start(args, env, f"{side}-{rep}")
        spawned = time.time()
        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        count = 0
        while count < jobs:
            if proc.poll() is not None:
                raise RuntimeError(f"{side} worker exited ({proc.returncode}); see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side}: {count}/{jobs} jobs done after {timeout_s:g}s")
            count = int(r.get(DONE_KEY) or 0)
            now = time.time()
            if count and (not progress or progress[-1][1] != count):
                progress.append((now, count))
            time.sleep(SAMPLE_S)
        worker_cpu = group_cpu_s(proc.pid)
        redis_cpu = (process_cpu_s(server.proc.pid) if server.proc else 0.0) - redis_cpu_before
        machine_use = meter.read(worker_cpu + redis_cpu)
    children.stop(proc)
    first, last = progress[0][0], progress[-1][0]
    low, high = (max(1, jobs * p // 100) for p in STEADY_WINDOW)
    t_low, t_high = _time_at(progress, low), _time_at(progress, high)
    result = {
        "side": side,
        "settings": side_settings(side),
        "rep": rep,
        "jobs": jobs,
        "enqueue_s": round(enqueue_s, 3),
        "startup_s": round(first - spawned, 3),
        "drain_s": round(last - first, 3),
        "jobs_per_s": (jobs - 1) / max(1e-6, last - first),
        "steady_jobs_per_s": (high - low) / max(1e-6, t_high - t_low),
        "cpu_s": {
            "worker": round(worker_cpu, 2),
            "redis": round(redis_cpu, 2),
            "other": machine_use["other_cpu_s"],
        },
        "worker_cpu_ms_per_job": round(1000 * worker_cpu / jobs, 3),
        "machine": machine_use,
    }
    log(
        f"{side} rep {rep}: {result['jobs_per_s']:.0f} jobs/s (steady "
        f"{result['steady_jobs_per_s']:.0f}), start-up {result['startup_s']:.2f}s, "
        f"CPU {result['cpu_s']}"
    )
    return result


def declare(recorder: Recorder, sides: list[str]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side in sides:
        recorder.figure(f"{side}.jobs_per_s", f"{side}: jobs/s", "jobs/s", "higher")
        recorder.figure(f"{side}.steady_jobs_per_s", f"{side}: steady jobs/s", "jobs/s", "higher")
        recorder.figure(
            f"{side}.worker_cpu_ms_per_job", f"{side}: worker CPU per job", "ms", "lower", digits=2
        )
        recorder.figure(f"{side}.startup_s", f"{side}: start-up", "s", "lower", digits=2)
    for figure, a, b in RATIOS:
        if a in sides and b in sides:
            recorder.figure(figure, f"{a}/{b} jobs/s", "x", "higher", digits=2)
    recorder.figure("other_cpu_s", "CPU other processes used per run", "s", None, digits=1)


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    side = result["side"]
    recorder.add(f"{side}.jobs_per_s", result["jobs_per_s"])
    recorder.add(f"{side}.steady_jobs_per_s", result["steady_jobs_per_s"])
    recorder.add(f"{side}.worker_cpu_ms_per_job", result["worker_cpu_ms_per_job"])
    recorder.add(f"{side}.startup_s", result["startup_s"])
    recorder.add("other_cpu_s", result["cpu_s"]["other"])


def record_ratios(recorder: Recorder, runs: list[dict[str, Any]], rep: int) -> None:
    """The ratios of this repetition's sides (each ran once in it)."""
    by_side = {r["side"]: r["jobs_per_s"] for r in runs if r["rep"] == rep}
    for figure, a, b in RATIOS:
        if a in by_side and b in by_side:
            for value in ratio_values([by_side[a]], [by_side[b]]):
                recorder.add(figure, value)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for side in SIDES:
        group = [r for r in runs if r["side"] == side]
        if not group:
            continue
        rows.append(
            {
                "side": side,
                "settings": group[0]["settings"],
                "jobs_per_s": spread([r["jobs_per_s"] for r in group]),
                "worker_cpu_ms_per_job": spread([r["worker_cpu_ms_per_job"] for r in group]),
                "startup_s": spread([r["startup_s"] for r in group]),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| side | settings | jobs/s median [min-max] | worker CPU ms/job | start-up s |",
        "|---|---|---|---:|---:|",
    ]
    for row in rows:
        j = row["jobs_per_s"]
        lines.append(
            f"| {row['side']} | {row['settings']} "
            f"| {j['median']:.0f} [{j['min']:.0f}-{j['max']:.0f}] "
            f"| {row['worker_cpu_ms_per_job']['median']:.2f} "
            f"| {row['startup_s']['median']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=SIDES)
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of one drain (s)")
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    sides = [s for s in SIDES if not args.only or s in args.only]
    require_celery_venv(sides)
    recorder = Recorder(
        "drain",
        args.out,
        quick=args.quick,
        settings={
            "jobs": args.jobs,
            "reps": args.reps,
            "job": "one INCR on the worker's own Redis connection",
            "steady_window_percent": list(STEADY_WINDOW),
            "sides": {side: side_settings(side) for side in sides},
        },
        versions={
            "ours": our_versions(),
            "celery": celery_versions() if "celery" in sides else None,
        },
    )
    declare(recorder, sides)
    runs: list[dict[str, Any]] = []
    server = RedisServer()
    children = Children(LOG_DIR)
    try:
        server.start()
        log(f"redis {server.url}")
        for rep in range(1, args.reps + 1):
            for side in sides:
                result = run_once(server, children, side, args.jobs, rep, args.timeout)
                runs.append(result)
                record(recorder, result)
                if side == sides[-1]:
                    record_ratios(recorder, runs, rep)
                recorder.run(result)
    finally:
        children.stop_all()
        server.stop()
    recorder.finish()
    print(f"\n{args.jobs} trivial jobs queued before ONE worker process starts\n")
    print(table(summarize(runs)))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
