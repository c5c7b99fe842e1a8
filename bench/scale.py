"""How far one Redis carries: the drain rate with 1, 2 and 4 worker processes and the
`POST /v1/exports` rate with 1, 2 and 4 uvicorn workers on ONE redis-server, what each job
costs that Redis (commands and CPU, for ours, raw arq and SAQ side by side), the ceiling of
one Redis core that cost projects, and the same with a replica and `REDIS_MIN_REPLICAS=1`.

    .venv/bin/python -m bench.scale [--jobs 3000] [--workers 1 2 4] [--http-workers 1 2 4] \
        [--seconds 5] [--reps 3] [--only ours arq-tuned saq ours-replica http http-wait]

Every side runs against a redis-server this benchmark starts on a free port (flushed before
each run); the replica sides against a second one with a replica attached
(`redis-server --replicaof`), so the first never carries a replication backlog.

- **Drain** (`ours`, `arq-tuned`, `saq`, `ours-replica`): N trivial jobs (one
  `INCR bench:done`) are enqueued in-process (ours: `JobStore.create`, the step the API's
  POST runs; arq: `enqueue_job`; SAQ: `queue.enqueue`), then W worker processes start at
  once: `arq bench.workers.OurWorkerSettings` (the service's worker, `jobs.worker`, with the
  bench's trivial kind) at `WORKER_CONCURRENCY=100`, `arq bench.workers.TunedArqWorkerSettings`
  (`max_jobs=100`, `poll_delay=0.01`), `saq bench.saq_worker.settings` (`concurrency=100`).
  jobs/s as in `bench/drain.py`: the jobs after the first over the time from the first done
  to the last. `ours-replica` is ours against the primary with a replica, API-side and
  worker-side settings given `REDIS_MIN_REPLICAS=1`.
- **HTTP** (`http`, `http-wait`): `uvicorn api.main:app --workers U` and wrk with
  `bench/wrk/post.lua` as in `bench/http_enqueue.py` (64 connections, a unique
  `Idempotency-Key` per request), no worker running; `http-wait` against the primary with a
  replica and `REDIS_MIN_REPLICAS=1`, so every 202 waits for Redis `WAIT`.

**What a job costs Redis.** Around each phase (enqueue, drain; or the measured wrk run) the
benchmark reads `INFO cpu` (`used_cpu_sys + used_cpu_user`) and `INFO commandstats` (every
command, Lua's inner calls included). The benchmark's own progress polls (one `GET` every
10 ms) are taken out: their commands exactly, their CPU at the cost of one `GET` round trip
measured in the same repetition. The trivial job's own `INCR` is in every side's count.
**Projected ceiling** = 1 / (Redis CPU seconds per job, enqueue and drain): the jobs a second
one fully busy Redis core would carry at that cost. Redis runs commands on one thread, and
its CPU per command falls as load batches replies, so a cost measured below saturation makes
the projection a conservative one. `ours-api` projects the production path: the API's POST
(`http` at the most uvicorn workers) plus our worker's drain (at the most worker
processes); `ours-api-wait` the same with the replica and `WAIT`.

Within each repetition every configuration runs once. Everything goes to one JSON file
(`bench.common.Recorder`), saved after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import drain
from bench.common import (
    OUR_BIN,
    RESULTS,
    Children,
    MachineMeter,
    Recorder,
    add_common_args,
    exit_on_sigterm,
    group_cpu_s,
    log,
    our_versions,
    ratio_values,
    wait_for,
)
from bench.http_enqueue import _answers, run_wrk, side_env, wrk_binary
from bench.workers import BENCH_REGISTRY, DONE_KEY, OUR_NOOP_KIND
from jobs.engine.store import JobStore
from jobs.settings import Settings
from tests.support.services import RedisServer, free_port

DEFAULT_OUT = RESULTS / "scale.json"
LOG_DIR = RESULTS / "scale_logs"
DRAIN_SIDES = ("ours", "arq-tuned", "saq", "ours-replica")
HTTP_SIDES = ("http", "http-wait")
SIDES = DRAIN_SIDES + HTTP_SIDES
REPLICA_SIDES = ("ours-replica", "http-wait")
CONCURRENCY = drain.CONCURRENCY
POLL_S = 0.01
CALIBRATION_GETS = 2000
IDLE_S = 2.0


# ---------------------------------------------------------------------- what Redis did


@dataclass(frozen=True)
class RedisUse:
    """Redis's CPU seconds (all threads, and the main thread), command calls and memory in
    use so far."""

    cpu_s: float
    main_thread_cpu_s: float
    calls: dict[str, int]
    usec: int
    memory_bytes: int

    @classmethod
    def read(cls, r: Redis) -> RedisUse:
        info = r.execute_command("INFO", "cpu", "commandstats", "memory")
        stats = {k[len("cmdstat_") :]: v for k, v in info.items() if k.startswith("cmdstat_")}
        return cls(
            cpu_s=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            main_thread_cpu_s=float(info.get("used_cpu_sys_main_thread", 0))
            + float(info.get("used_cpu_user_main_thread", 0)),
            calls={name: int(s["calls"]) for name, s in stats.items()},
            usec=sum(int(s["usec"]) for s in stats.values()),
            memory_bytes=int(info["used_memory"]),
        )

    def since(self, before: RedisUse, polls: int = 0, poll_cpu_s: float = 0.0) -> dict[str, Any]:
        """What Redis did between `before` and this reading, without the benchmark's own
        `polls` (GETs whose CPU is `poll_cpu_s` each)."""
        calls = {
            name: n - before.calls.get(name, 0)
            for name, n in self.calls.items()
            if name != "info" and n - before.calls.get(name, 0)
        }
        if polls:
            calls["get"] = calls.get("get", 0) - polls
        return {
            "cpu_s": max(0.0, self.cpu_s - before.cpu_s - polls * poll_cpu_s),
            "main_thread_cpu_s": max(
                0.0, self.main_thread_cpu_s - before.main_thread_cpu_s - polls * poll_cpu_s
            ),
            "commands": sum(calls.values()),
            "command_usec": self.usec - before.usec,
            "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        }


def keys_memory(r: Redis) -> int:
    """Bytes every key takes (`MEMORY USAGE ... SAMPLES 0`: the whole value, key and
    overhead). Unlike `used_memory`, whose changes over a few thousand jobs the allocator's
    pages and Redis's own buffers blur, it counts only the data."""
    names = list(r.scan_iter(count=1000))
    total = 0
    for start in range(0, len(names), 500):
        with r.pipeline(transaction=False) as pipe:
            for name in names[start : start + 500]:
                pipe.memory_usage(name, samples=0)
            total += sum(int(n or 0) for n in pipe.execute())
    return total


def get_cpu_s(r: Redis) -> float:
    """Redis CPU seconds of one `GET` round trip (what the progress poll costs it)."""
    before = RedisUse.read(r)
    for _ in range(CALIBRATION_GETS):
        r.get(DONE_KEY)
    return (RedisUse.read(r).cpu_s - before.cpu_s) / CALIBRATION_GETS


# ---------------------------------------------------------------------- servers


@dataclass
class Servers:
    """The plain primary, and a primary with a replica attached (started on demand)."""

    plain: RedisServer = field(default_factory=RedisServer)
    primary: RedisServer | None = None
    replica: RedisServer | None = None

    def start(self, replicas: bool) -> None:
        self.plain.start()
        if replicas:
            self.primary = RedisServer().start()
            self.replica = RedisServer().start()
            with Redis(port=self.replica.port) as rep:
                rep.replicaof("127.0.0.1", self.primary.port)
                wait_for(lambda: rep.info("replication").get("master_link_status") == "up",
                         30, "the replica's link", 0.1)  # fmt: skip

    def for_side(self, side: str) -> RedisServer:
        if side in REPLICA_SIDES:
            assert self.primary is not None
            return self.primary
        return self.plain

    def replicas_in_sync(self) -> bool:
        """The primary's replica is online and has acknowledged everything written."""
        assert self.primary is not None
        with Redis(port=self.primary.port) as r:
            info = r.info("replication")
            replica = info.get("slave0") or {}
            return replica.get("state") == "online" and replica.get("offset") == info.get(
                "master_repl_offset"
            )

    def stop(self) -> None:
        for server in (self.replica, self.primary, self.plain):
            if server is not None:
                server.stop()


def idle_cpu_percent(server: RedisServer, seconds: float = IDLE_S) -> float:
    """Redis's own housekeeping with nothing to do (its timers), in % of a core: it is in
    every phase's CPU, at this rate times the phase's length."""
    with Redis.from_url(server.url) as r:
        r.flushall()
        before = RedisUse.read(r)
        clock = time.monotonic()
        time.sleep(seconds)  # measuring an idle period, not waiting for a condition
        return 100 * (RedisUse.read(r).cpu_s - before.cpu_s) / (time.monotonic() - clock)


def flush(r: Redis, servers: Servers, side: str) -> None:
    r.flushall()
    if side in REPLICA_SIDES:
        wait_for(servers.replicas_in_sync, 30, "the replica to catch up", 0.05)


# ---------------------------------------------------------------------- drain


def replica_env(side: str) -> dict[str, str]:
    return {"REDIS_MIN_REPLICAS": "1"} if side in REPLICA_SIDES else {}


async def enqueue_ours(redis_url: str, jobs: int, side: str) -> None:
    """`JobStore.create` for each job, as the API's POST does (with its settings)."""
    # With REDIS_MIN_REPLICAS, `create` runs the enqueue script and then Redis `WAIT`.
    min_replicas = 1 if side in REPLICA_SIDES else 0
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        worker_concurrency=CONCURRENCY,
        **{k.lower(): v for k, v in drain.OUR_ENV.items()},  # type: ignore[arg-type]
        redis_min_replicas=min_replicas,
    )
    redis = AsyncRedis.from_url(redis_url)
    try:
        store = JobStore(redis, settings, BENCH_REGISTRY)
        await drain._gather_in_chunks(
            jobs, lambda _i: store.create(kind=OUR_NOOP_KIND, account="bench", args={})
        )
    finally:
        await redis.aclose()


def enqueue(side: str, redis_url: str, jobs: int) -> None:
    if side in ("ours", "ours-replica"):
        asyncio.run(enqueue_ours(redis_url, jobs, side))
    else:
        drain.enqueue(side, redis_url, jobs)


def worker_command(side: str, redis_url: str) -> tuple[list[str], dict[str, str]]:
    base = "ours" if side == "ours-replica" else side
    args, env = drain.worker_command(base, redis_url)
    return args, {**env, **replica_env(side)}


def run_drain(
    servers: Servers, children: Children, side: str, workers: int, jobs: int, rep: int,
    timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Enqueue `jobs`, then drain them with `workers` processes; what Redis did in each."""
    server = servers.for_side(side)
    with Redis.from_url(server.url) as r:
        flush(r, servers, side)
        poll_cpu = get_cpu_s(r)
        at_start = RedisUse.read(r)
        clock = time.monotonic()
        enqueue(side, server.url, jobs)
        enqueue_s = time.monotonic() - clock
        enqueued = RedisUse.read(r)
        args, env = worker_command(side, server.url)
        clients = r.info("clients")["connected_clients"]
        meter = MachineMeter().start()
        procs = [children.start(args, env, f"{side}-w{workers}-{i}-{rep}") for i in range(workers)]
        spawned = time.time()
        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        count = polls = 0
        while count < jobs:
            for proc in procs:
                children.check_alive(proc, f"{side} worker")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side} x{workers}: {count}/{jobs} done after {timeout_s:g}s")
            count = int(r.get(DONE_KEY) or 0)
            polls += 1
            if count and (not progress or progress[-1][1] != count):
                progress.append((time.time(), count))
            time.sleep(POLL_S)
        drained = RedisUse.read(r)
        workers_cpu = sum(group_cpu_s(p.pid) for p in procs)
        for proc in procs:  # all at once: each then stops in the same grace period
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            children.stop(proc)
        # Once the workers are gone, nothing they do on shutdown is missed.
        wait_for(lambda: r.info("clients")["connected_clients"] <= clients, 30, "disconnects", 0.05)
        retained = keys_memory(r)
    enqueue_use = enqueued.since(at_start)
    drain_use = drained.since(enqueued, polls, poll_cpu)
    first, last = progress[0][0], progress[-1][0]
    span = max(POLL_S, last - first)  # no finer than the progress poll
    total_cpu = enqueue_use["cpu_s"] + drain_use["cpu_s"]
    result = {
        "part": "drain",
        "side": side,
        "workers": workers,
        "rep": rep,
        "jobs": jobs,
        "enqueue_s": round(enqueue_s, 3),
        "startup_s": round(first - spawned, 3),
        "drain_s": round(span, 3),
        "jobs_per_s": (jobs - 1) / span,
        "polls": polls,
        "poll_cpu_us": round(poll_cpu * 1e6, 2),
        "redis": {"enqueue": enqueue_use, "drain": drain_use},
        "redis_commands_per_job": (enqueue_use["commands"] + drain_use["commands"]) / jobs,
        "redis_cpu_us_per_job": 1e6 * total_cpu / jobs,
        "enqueue_redis_cpu_us_per_job": 1e6 * enqueue_use["cpu_s"] / jobs,
        "drain_redis_cpu_us_per_job": 1e6 * drain_use["cpu_s"] / jobs,
        # From the workers' spawn to the last job: start-up is in it, so it is a floor.
        "drain_redis_busy_percent": 100 * drain_use["cpu_s"] / max(1e-6, last - spawned),
        "ceiling_jobs_per_s": jobs / max(1e-9, total_cpu),
        # What the finished jobs leave in Redis (records, indexes; each side's own retention),
        # the benchmark's counter included.
        "retained_bytes_per_job": retained / jobs,
        "used_memory_change_bytes": drained.memory_bytes - at_start.memory_bytes,
        # The job's Redis CPU in GET round trips: a yardstick that travels between machines.
        "get_equivalents_per_job": total_cpu / jobs / max(1e-9, poll_cpu),
        "workers_cpu_s": round(workers_cpu, 2),
        "machine": meter.read(workers_cpu + drain_use["cpu_s"]),
    }
    log(
        f"{side} x{workers} rep {rep}: {result['jobs_per_s']:.0f} jobs/s, "
        f"{result['redis_commands_per_job']:.1f} commands/job, Redis "
        f"{result['redis_cpu_us_per_job']:.1f} us/job (ceiling "
        f"{result['ceiling_jobs_per_s']:.0f} jobs/s), Redis busy "
        f"{result['drain_redis_busy_percent']:.0f}% while draining"
    )
    return result


# ---------------------------------------------------------------------- HTTP


def run_http(
    servers: Servers, children: Children, side: str, workers: int, args: Any, rep: int
) -> dict[str, Any]:
    """wrk against `POST /v1/exports` with `workers` uvicorn workers; what Redis did."""
    server = servers.for_side(side)
    with Redis.from_url(server.url) as r:
        flush(r, servers, side)
        port = free_port()
        env = {**side_env("ours", server.url), **replica_env(side)}
        proc = children.start(
            [str(OUR_BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port",
             str(port), "--workers", str(workers), "--no-access-log"],
            env, f"{side}-w{workers}-{rep}",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/health/live"), 60, f"the API on {port}", 0.2)
        run_wrk(url, args.warmup, args.connections, "ours")
        before = RedisUse.read(r)
        meter = MachineMeter().start()
        api_before = group_cpu_s(proc.pid)
        measured = run_wrk(url, args.seconds, args.connections, "ours")
        after = RedisUse.read(r)
        api_cpu = group_cpu_s(proc.pid) - api_before
    children.stop(proc)
    used = after.since(before)
    seconds = measured["duration_us"] / 1e6
    requests = measured["requests"]
    errors = measured["errors"]
    result = {
        "part": "http",
        "side": side,
        "workers": workers,
        "rep": rep,
        "connections": args.connections,
        "seconds": seconds,
        "requests": requests,
        "errors": errors,
        "requests_per_s": requests / seconds,
        "latency_ms": {k: v / 1000 for k, v in measured["latency_us"].items()},
        "redis": used,
        "redis_commands_per_request": used["commands"] / max(1, requests),
        "redis_cpu_us_per_request": 1e6 * used["cpu_s"] / max(1, requests),
        "redis_busy_percent": 100 * used["cpu_s"] / seconds,
        "api_cpu_s": round(api_cpu, 2),
        "machine": meter.read(api_cpu + used["cpu_s"]),
    }
    if any(errors.values()):
        raise RuntimeError(f"{side} x{workers}: wrk saw errors {errors}; see its log")
    log(
        f"{side} x{workers} rep {rep}: {result['requests_per_s']:.0f} req/s, p99 "
        f"{result['latency_ms']['p99']:.1f} ms, {result['redis_commands_per_request']:.1f} "
        f"commands/request, Redis {result['redis_cpu_us_per_request']:.1f} us/request, busy "
        f"{result['redis_busy_percent']:.0f}%"
    )
    return result


# ---------------------------------------------------------------------- figures

DRAIN_FIGURES = (
    ("jobs_per_s", "jobs/s", "jobs/s", "higher", None),
    ("redis_commands_per_job", "Redis commands per job", "commands", "lower", 1),
    ("redis_cpu_us_per_job", "Redis CPU per job", "us", "lower", 1),
    ("enqueue_redis_cpu_us_per_job", "Redis CPU per job, enqueue", "us", "lower", 1),
    ("drain_redis_cpu_us_per_job", "Redis CPU per job, drain", "us", "lower", 1),
    ("drain_redis_busy_percent", "Redis busy while draining", "% of a core", None, 0),
    ("ceiling_jobs_per_s", "ceiling of one Redis core", "jobs/s", "higher", None),
    ("get_equivalents_per_job", "Redis CPU per job in GET round trips", "GETs", "lower", 1),
    ("retained_bytes_per_job", "Redis memory per finished job", "bytes", "lower", 0),
)
HTTP_FIGURES = (
    ("requests_per_s", "requests/s", "requests/s", "higher", None),
    ("p99_ms", "p99", "ms", "lower", 1),
    ("redis_commands_per_request", "Redis commands per request", "commands", "lower", 1),
    ("redis_cpu_us_per_request", "Redis CPU per request", "us", "lower", 1),
    ("redis_busy_percent", "Redis busy", "% of a core", None, 0),
)


def side_id(side: str, workers: int) -> str:
    return f"{side}-w{workers}"


def side_settings(side: str, workers: int) -> str:
    """The configuration, as the report shows it."""
    if side in HTTP_SIDES:
        text = f"`POST /v1/exports`, uvicorn --workers {workers}, no worker"
        return text + (", a replica, REDIS_MIN_REPLICAS=1" if side == "http-wait" else "")
    how = {
        "ours": f"WORKER_CONCURRENCY={CONCURRENCY}, FAIR_SCHEDULING={drain.FAIR}",
        "arq-tuned": drain.side_settings("arq-tuned"),
        "saq": drain.side_settings("saq"),
        "ours-replica": f"WORKER_CONCURRENCY={CONCURRENCY}, a replica, REDIS_MIN_REPLICAS=1",
    }[side]
    return f"{workers} worker process{'es' if workers > 1 else ''}, {how}"


@dataclass(frozen=True)
class Plan:
    """Which configurations run: (side, worker count) for the drain and for HTTP."""

    drains: tuple[tuple[str, int], ...]
    https: tuple[tuple[str, int], ...]

    @property
    def api_pairs(self) -> list[tuple[str, str, str]]:
        """(figure prefix, HTTP config, drain config) of each projected API path."""
        pairs = []
        for name, http, worker in (("ours-api", "http", "ours"),
                                   ("ours-api-wait", "http-wait", "ours-replica")):  # fmt: skip
            https = [w for s, w in self.https if s == http]
            drains = [w for s, w in self.drains if s == worker]
            if https and drains:
                pairs.append((name, side_id(http, max(https)), side_id(worker, max(drains))))
        return pairs


def declare(recorder: Recorder, plan: Plan) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side, workers in plan.drains:
        sid = side_id(side, workers)
        for suffix, label, unit, better, digits in DRAIN_FIGURES:
            recorder.figure(f"{sid}.{suffix}", f"{sid}: {label}", unit, better, digits=digits)
    for side, workers in plan.https:
        sid = side_id(side, workers)
        for suffix, label, unit, better, digits in HTTP_FIGURES:
            recorder.figure(f"{sid}.{suffix}", f"{sid}: {label}", unit, better, digits=digits)
    if plan.drains:
        recorder.figure(
            "redis.get_cpu_us", "Redis CPU of one GET round trip (the machine's yardstick)",
            "us", None, digits=1,
        )  # fmt: skip
    for name, http, worker in plan.api_pairs:
        recorder.figure(
            f"{name}.ceiling_jobs_per_s",
            f"{name}: ceiling of one Redis core ({http} + {worker})",
            "jobs/s", "higher",
        )  # fmt: skip
        recorder.figure(
            f"{name}.redis_cpu_us_per_job", f"{name}: Redis CPU per job", "us", "lower", digits=1
        )
    for workers in sorted({w for s, w in plan.https if s == "http-wait"}):
        if ("http", workers) in plan.https:
            recorder.figure(
                f"ratio.w{workers}.wait_over_plain",
                f"http-wait/http requests/s, uvicorn --workers {workers}",
                "x", "higher", digits=2,
            )  # fmt: skip


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    sid = side_id(result["side"], result["workers"])
    figures = DRAIN_FIGURES if result["part"] == "drain" else HTTP_FIGURES
    for suffix, *_ in figures:
        value = result["latency_ms"]["p99"] if suffix == "p99_ms" else result[suffix]
        recorder.add(f"{sid}.{suffix}", value)


def record_derived(recorder: Recorder, plan: Plan, runs: list[dict[str, Any]], rep: int) -> None:
    """This repetition's projected API ceilings and WAIT ratios (each config ran once)."""
    mine = {side_id(r["side"], r["workers"]): r for r in runs if r["rep"] == rep}
    gets = [r["poll_cpu_us"] for r in mine.values() if r["part"] == "drain"]
    if gets:
        recorder.add("redis.get_cpu_us", statistics.median(gets))
    for name, http, worker in plan.api_pairs:
        if http in mine and worker in mine:
            cpu_us = (
                mine[http]["redis_cpu_us_per_request"] + mine[worker]["drain_redis_cpu_us_per_job"]
            )
            recorder.add(f"{name}.redis_cpu_us_per_job", cpu_us)
            recorder.add(f"{name}.ceiling_jobs_per_s", 1e6 / max(1e-9, cpu_us))
    for workers in sorted({w for s, w in plan.https if s == "http-wait"}):
        wait, plain = mine.get(side_id("http-wait", workers)), mine.get(side_id("http", workers))
        if wait and plain:
            for value in ratio_values([wait["requests_per_s"]], [plain["requests_per_s"]]):
                recorder.add(f"ratio.w{workers}.wait_over_plain", value)


def plan_of(args: argparse.Namespace) -> Plan:
    sides = [s for s in SIDES if not args.only or s in args.only]
    drains = tuple(
        (s, w)
        for s in sides
        if s in DRAIN_SIDES
        for w in (args.replica_workers if s == "ours-replica" else args.workers)
    )
    https = tuple((s, w) for s in sides if s in HTTP_SIDES for w in args.http_workers)
    return Plan(drains, https)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per drain")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--replica-workers", type=int, nargs="+", default=[4], help="ours-replica's worker counts"
    )
    parser.add_argument("--http-workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=int, default=5, help="wrk's measured run (s)")
    parser.add_argument("--warmup", type=int, default=1, help="wrk warm-up (s)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=SIDES)
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of one drain (s)")
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    plan = plan_of(args)
    if plan.https:
        wrk_binary()
    recorder = Recorder(
        "scale",
        args.out,
        quick=args.quick,
        settings={
            "jobs": args.jobs,
            "reps": args.reps,
            "job": "one INCR on the worker's own Redis connection",
            "wrk": f"-t1 -c{args.connections}, {args.seconds} s after a {args.warmup} s warm-up",
            "connections": args.connections,
            "poll_s": POLL_S,
            "sides": {side_id(s, w): side_settings(s, w) for s, w in plan.drains + plan.https},
            "api_paths": {name: [http, worker] for name, http, worker in plan.api_pairs},
        },
        versions={"ours": our_versions()},
    )
    declare(recorder, plan)
    runs: list[dict[str, Any]] = []
    servers = Servers()
    children = Children(LOG_DIR)
    clock = time.monotonic()
    try:
        servers.start(replicas=any(s in REPLICA_SIDES for s, _ in plan.drains + plan.https))
        idle = idle_cpu_percent(servers.plain)
        recorder.figure(
            "redis.idle_cpu_percent", "Redis with nothing to do", "% of a core", None, digits=2,
            basis=f"measured once, {IDLE_S:g} s idle",
        )  # fmt: skip
        recorder.add("redis.idle_cpu_percent", idle)
        log(f"Redis idle: {idle:.2f}% of a core")
        for rep in range(1, args.reps + 1):
            for side, workers in plan.drains + plan.https:
                if side in DRAIN_SIDES:
                    result = run_drain(
                        servers, children, side, workers, args.jobs, rep, args.timeout
                    )
                else:
                    result = run_http(servers, children, side, workers, args, rep)
                runs.append(result)
                record(recorder, result)
                recorder.run(result)
            record_derived(recorder, plan, runs, rep)
            recorder.save()
    finally:
        children.stop_all()
        servers.stop()
    recorder.finish()
    log(f"scale done in {time.monotonic() - clock:.0f}s")
    print(table(recorder.data["figures"]))
    print(f"\nresults: {args.out}")


def table(figures: dict[str, dict[str, Any]]) -> str:
    """Every figure's values, one line each (the report is `bench/report.py`'s)."""
    return "\n".join(
        f"{fid}: {', '.join(f'{v:g}' for v in entry['values'])} {entry['unit']}"
        for fid, entry in figures.items()
    )


if __name__ == "__main__":
    main()
