"""Crash-recovery benchmark: from `kill -9` of a worker running a job to that job's next
start on another worker.

    .venv/bin/python -m bench.crash_recovery [--trials N] [--only ours|arq] [--lease S]
        [--out PATH] [--quick]

Two sides, each against a private `redis-server` this script starts on a free port:

- ours: this service's worker (`jobs.worker.settings_class`, every setting at its default,
  so `WORKER_LEASE_SECONDS=10`, unless `--lease` sets it). Trials run one after another.
  The lease the workers ran with is recorded in the JSON, and the report's bound is
  computed from it.
- arq: plain arq 0.28 at its defaults (`job_timeout=300`), whose claim on a running job
  (`arq:in-progress:<id>`, TTL `job_timeout + 10 s`) is never renewed. One trial takes about
  five minutes, so the arq trials run at the same time: one queue per trial, each with its
  own pair of workers, all first workers killed at the same moment.

A trial: start worker A, enqueue a job that sleeps 600 s, wait until it starts on A, start
an idle worker B and wait until it is up, wait a random fraction of a heartbeat interval
(so the kill falls anywhere in A's beat cycle), `kill -9` A, and wait until the job starts
again on B. The delay is B's start mark (wall clock, written by the job) minus the moment
of the kill. Every wait has a deadline; every process started here is killed by its pid
at the end. Each trial is one repetition of the figure `<side>.delay_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import arq.version
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench.common import (
    Children,
    Recorder,
    add_common_args,
    exit_on_sigterm,
    log,
    our_versions,
    wait_for,
)
from bench.workers import (
    BENCH_REGISTRY,
    OUR_KIND,
    PLAIN_FUNCTION,
    json_dumps,
    json_loads,
    started_key,
)
from jobs.engine import keys
from jobs.engine.leases import BEATS_PER_LEASE, DEAD_AFTER
from jobs.engine.store import JobStore
from jobs.settings import Settings
from tests.support.services import RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "crash_recovery.json"
JOB_SECONDS = 600
WORKER_START_TIMEOUT_S = 60.0

# What our worker gets besides its defaults: the Redis, and S3 settings only to build a
# client (no S3 call happens while a bench job runs); no metrics server.
OUR_ENV = {
    "ENVIRONMENT": "development",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "WORKER_METRICS_PORT": "0",
}


def arq_default(name: str) -> Any:
    """A default of arq's Worker, read from its signature rather than copied."""
    return inspect.signature(Worker).parameters[name].default


def arq_cli() -> list[str]:
    """The arq CLI of this interpreter's environment."""
    script = Path(sys.executable).parent / "arq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "arq"]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any of the service's settings, plus `extra`:
    a worker sees defaults for everything not named in `extra`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def our_env(lease_s: float | None) -> dict[str, str]:
    """What our workers get besides their defaults: OUR_ENV, and the lease when given."""
    env = dict(OUR_ENV)
    if lease_s is not None:
        env["WORKER_LEASE_SECONDS"] = f"{lease_s:g}"
    return env


def our_settings(redis_url: str, env: dict[str, str]) -> Settings:
    """The settings our workers run with (defaults + `env`), built without reading this
    process's environment or a `.env`, so the enqueuer agrees with the workers."""
    values: dict[str, Any] = {
        name: info.get_default(call_default_factory=True)
        for name, info in Settings.model_fields.items()
    }
    values.update({k.lower(): v for k, v in env.items()}, redis_url=redis_url)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Procs(Children):
    """Every worker process this run started, so that all of them are killed at the end."""

    def start_worker(self, target: str, env: dict[str, str], name: str) -> subprocess.Popen:
        """`arq <target>` in its own session, output to `<log_dir>/<name>.log`."""
        return self.start([*arq_cli(), target], env, name)

    def kill(self, proc: subprocess.Popen) -> float:
        """SIGKILL one process by its pid; returns the wall-clock time of the kill."""
        killed_at = time.time()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        return killed_at

    def reap(self, proc: subprocess.Popen) -> None:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            log(f"process {proc.pid} did not exit 10 s after SIGKILL")

    def kill_all(self) -> None:
        for proc in self.started:
            self.kill(proc)
        for proc in self.started:
            self.reap(proc)
        self.started.clear()


def marks(r: Redis, job_id: str) -> list[dict[str, Any]]:
    """Every start of a job so far, oldest first: `{"pid", "at"}`."""
    return [json.loads(raw) for raw in r.lrange(started_key(job_id), 0, -1)]


def mark_by(r: Redis, job_id: str, pid: int) -> dict[str, Any] | None:
    """The first start of the job by process `pid`; a start by any other process is an error."""
    for mark in marks(r, job_id):
        if mark["pid"] == pid:
            return mark
    return None


def check_alive(proc: subprocess.Popen, what: str, log_file: Path) -> None:
    if proc.poll() is not None:
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} (pid {proc.pid}) exited with {proc.returncode}:\n{tail}")


def summary(delays: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(delays), 3),
        "worst_s": round(max(delays), 3),
        "min_s": round(min(delays), 3),
        "mean_s": round(statistics.fmean(delays), 3),
    }


# -- ours ---------------------------------------------------------------------------------


async def enqueue_ours(settings: Settings) -> str:
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        store = JobStore(redis, settings, BENCH_REGISTRY)
        enqueued = await store.create(kind=OUR_KIND, account="bench", args={"seconds": JOB_SECONDS})
        return enqueued.job_id
    finally:
        await redis.aclose()


def our_worker_up(r: Redis, pid: int, lease_s: float) -> bool:
    """Whether our worker with this pid beat within the last lease (ids are host-pid-hex)."""
    for member, score in r.zrange(keys.WORKERS, 0, -1, withscores=True):
        if f"-{pid}-" in member.decode() and score >= time.time() - lease_s:
            return True
    return False


def start_our_worker(
    procs: Procs, r: Redis, env: dict[str, str], name: str, lease_s: float
) -> subprocess.Popen:
    """Start our worker and wait until it has registered (its first heartbeat)."""
    proc = procs.start_worker("bench.workers.OurWorkerSettings", env, name)

    def up() -> bool:
        check_alive(proc, f"worker {name}", procs.log_path(name))
        return our_worker_up(r, proc.pid, lease_s)

    wait_for(up, WORKER_START_TIMEOUT_S, f"our worker {name} to register", 0.05)
    return proc


def our_trial(
    i: int,
    settings: Settings,
    env: dict[str, str],
    procs: Procs,
    r: Redis,
    rng: random.Random,
) -> dict[str, Any]:
    """One trial against our worker; Redis is emptied before and after."""
    lease = settings.worker_lease_seconds
    r.flushall()
    a = start_our_worker(procs, r, env, f"ours-{i}-A", lease)
    job_id = asyncio.run(enqueue_ours(settings))
    first = wait_for(lambda: mark_by(r, job_id, a.pid), 30, "the job to start on A", 0.02)
    b = start_our_worker(procs, r, env, f"ours-{i}-B", lease)
    # Kill anywhere in A's heartbeat cycle.
    time.sleep(rng.uniform(0, lease / BEATS_PER_LEASE))
    killed_at = procs.kill(a)
    procs.reap(a)
    second = wait_for(
        lambda: mark_by(r, job_id, b.pid),
        lease * 3 + 30,
        f"trial {i}: the job to start again on B",
        0.01,
    )
    others = [m for m in marks(r, job_id) if m["pid"] not in (a.pid, b.pid)]
    procs.kill(b)
    procs.reap(b)
    r.flushall()
    return {
        "job_id": job_id,
        "worker_a_pid": a.pid,
        "worker_b_pid": b.pid,
        "killed_at": killed_at,
        "ran_before_kill_s": round(killed_at - first["at"], 3),
        "restarted_at": second["at"],
        "delay_s": round(second["at"] - killed_at, 3),
        "unexpected_starts": others,
    }


def run_ours(
    trials: int,
    redis_url: str,
    procs: Procs,
    r: Redis,
    rng: random.Random,
    lease_s: float | None,
    recorder: Recorder,
) -> dict:
    extra = our_env(lease_s)
    settings = our_settings(redis_url, extra)
    env = child_env({**extra, "REDIS_URL": redis_url})
    lease = settings.worker_lease_seconds
    results: list[dict[str, Any]] = []
    for i in range(trials):
        results.append(our_trial(i, settings, env, procs, r, rng))
        recorder.add("ours.delay_s", results[-1]["delay_s"])
        recorder.run({"side": "ours", **results[-1]})
        log(f"ours trial {i + 1}/{trials}: {results[-1]['delay_s']:.2f} s")
    delays = [t["delay_s"] for t in results]
    return {
        "mode": "sequential",
        "settings": {
            "WORKER_LEASE_SECONDS": lease,
            "heartbeat_interval_s": round(max(0.1, lease / BEATS_PER_LEASE), 3),
            "dead_after_s": round(lease * DEAD_AFTER, 3),
            "reaper_interval_s": max(0.1, min(0.5, lease / 5)),
            "WORKER_POLL_DELAY_SECONDS": settings.worker_poll_delay_seconds,
            "JOB_TIMEOUT_SECONDS": settings.job_timeout_seconds,
            "WORKER_CONCURRENCY": settings.worker_concurrency,
            "WORKER_MAX_CRASHES": settings.worker_max_crashes,
            "JOB_MAX_TRIES": settings.job_max_tries,
            "environment": extra,
            "note": "every other setting at its default",
        },
        **summary(delays),
    }


# -- plain arq ----------------------------------------------------------------------------


async def enqueue_plain(redis_url: str, jobs: list[tuple[str, str]]) -> None:
    pool = await create_pool(
        RedisSettings.from_dsn(redis_url), job_serializer=json_dumps, job_deserializer=json_loads
    )
    try:
        for queue, job_id in jobs:
            job = await pool.enqueue_job(
                PLAIN_FUNCTION, JOB_SECONDS, _job_id=job_id, _queue_name=queue
            )
            if job is None:
                raise RuntimeError(f"arq refused to enqueue {job_id} (the id exists already)")
    finally:
        await pool.aclose()


def arq_started(procs: Procs, name: str) -> bool:
    return b"Starting worker" in procs.log_path(name).read_bytes()


def run_arq(trials: int, redis_url: str, procs: Procs, r: Redis, recorder: Recorder) -> dict:
    job_timeout = arq_default("job_timeout")
    claim_ttl = job_timeout + 10  # arq's in_progress_timeout_s: max job timeout + 10 s
    run_tag = f"{int(time.time())}"
    queues = [f"bench:arq:{i}" for i in range(trials)]
    job_ids = [f"bench-arq-{run_tag}-{i}" for i in range(trials)]
    target = "bench.workers.PlainArqWorkerSettings"
    r.flushall()

    def env(queue: str) -> dict[str, str]:
        return child_env({"REDIS_URL": redis_url, "QUEUE_NAME": queue})

    workers_a = [procs.start_worker(target, env(q), f"arq-{i}-A") for i, q in enumerate(queues)]
    asyncio.run(enqueue_plain(redis_url, list(zip(queues, job_ids, strict=True))))

    def all_started_on_a() -> list[dict[str, Any]] | None:
        found = []
        for i, (a, job_id) in enumerate(zip(workers_a, job_ids, strict=True)):
            check_alive(a, f"arq worker {i}-A", procs.log_path(f"arq-{i}-A"))
            mark = mark_by(r, job_id, a.pid)
            if mark is None:
                return None
            found.append(mark)
        return found

    firsts = wait_for(all_started_on_a, WORKER_START_TIMEOUT_S + 2 * trials, "jobs on A", 0.05)
    workers_b = [procs.start_worker(target, env(q), f"arq-{i}-B") for i, q in enumerate(queues)]

    def all_b_up() -> bool:
        for i, b in enumerate(workers_b):
            check_alive(b, f"arq worker {i}-B", procs.log_path(f"arq-{i}-B"))
        return all(arq_started(procs, f"arq-{i}-B") for i in range(trials))

    wait_for(all_b_up, WORKER_START_TIMEOUT_S + 2 * trials, "arq workers B to start", 0.1)
    time.sleep(1.0)  # "Starting worker" is logged just before the first poll
    killed = [procs.kill(a) for a in workers_a]
    for a in workers_a:
        procs.reap(a)
    log(
        f"arq: killed {trials} workers A; waiting for the claims to expire "
        f"(about {claim_ttl - (killed[0] - min(m['at'] for m in firsts)):.0f} s)"
    )
    seconds: dict[int, dict[str, Any]] = {}
    next_report = time.monotonic() + 30

    def all_restarted() -> bool:
        nonlocal next_report
        for i, (b, job_id) in enumerate(zip(workers_b, job_ids, strict=True)):
            if i not in seconds and (mark := mark_by(r, job_id, b.pid)) is not None:
                seconds[i] = mark
                log(f"arq trial {i + 1}/{trials}: {mark['at'] - killed[i]:.2f} s")
        if time.monotonic() >= next_report:
            next_report += 30
            since = time.time() - killed[0]
            log(f"arq: {len(seconds)}/{trials} restarted, {since:.0f} s after the kill")
        return len(seconds) == trials

    wait_for(all_restarted, claim_ttl + 120, "the arq jobs to start again on B", 0.05)
    results = []
    for i in range(trials):
        a, b, job_id = workers_a[i], workers_b[i], job_ids[i]
        others = [m for m in marks(r, job_id) if m["pid"] not in (a.pid, b.pid)]
        results.append(
            {
                "job_id": job_id,
                "queue": queues[i],
                "worker_a_pid": a.pid,
                "worker_b_pid": b.pid,
                "killed_at": killed[i],
                "ran_before_kill_s": round(killed[i] - firsts[i]["at"], 3),
                "restarted_at": seconds[i]["at"],
                "delay_s": round(seconds[i]["at"] - killed[i], 3),
                "unexpected_starts": others,
            }
        )
    for b in workers_b:
        procs.kill(b)
    for b in workers_b:
        procs.reap(b)
    r.flushall()
    for trial in results:
        recorder.add("arq.delay_s", trial["delay_s"])
        recorder.run({"side": "arq", **trial})
    delays = [t["delay_s"] for t in results]
    return {
        "mode": f"concurrent: {trials} queues, one worker pair each, all A killed at once",
        "settings": {
            "job_timeout_s": job_timeout,
            "in_progress_ttl_s": claim_ttl,
            "poll_delay_s": arq_default("poll_delay"),
            "max_tries": arq_default("max_tries"),
            "max_jobs": arq_default("max_jobs"),
            "serializer": "json",
            "note": "everything else arq 0.28's default; queue_name one per trial",
        },
        **summary(delays),
    }


# -- report -------------------------------------------------------------------------------


def table(sides: dict[str, dict], trials: dict[str, int]) -> str:
    rows = [
        "| side | trials | median s | worst s | min s | settings |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, side in sides.items():
        s = side["settings"]
        if name == "ours":
            label = "ours (`jobs.worker`)"
            setting = (
                f"WORKER_LEASE_SECONDS={s['WORKER_LEASE_SECONDS']:g}, rest default; sequential"
            )
        else:
            label = f"plain arq {arq.version.VERSION}"
            setting = (
                f"job_timeout={s['job_timeout_s']:g} (claim TTL {s['in_progress_ttl_s']:g} s), "
                f"rest default; trials run concurrently"
            )
        rows.append(
            f"| {label} | {trials[name]} | {side['median_s']:.2f} | "
            f"{side['worst_s']:.2f} | {side['min_s']:.2f} | {setting} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.crash_recovery",
        description="Time from kill -9 of a worker running a job to the job's next start "
        "on another worker: ours vs plain arq.",
    )
    parser.add_argument("--trials", type=int, default=10, help="trials per side (default 10)")
    parser.add_argument("--only", choices=("ours", "arq"), help="run one side only")
    parser.add_argument(
        "--lease", type=float, help="WORKER_LEASE_SECONDS of our workers (default: its default)"
    )
    add_common_args(parser, DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill-time jitter")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds through the `finally` below, so no worker or Redis is left behind.
    exit_on_sigterm()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-crash-recovery-"))
    procs = Procs(log_dir)
    server = RedisServer()
    ok = False
    sides: dict[str, dict] = {}
    recorder = Recorder(
        "crash_recovery",
        args.out,
        quick=args.quick,
        settings={
            "measures": "seconds from kill -9 of the worker running a job to the job's next "
            "start on another (idle, already running) worker",
            "trials": args.trials,
            "job_seconds": JOB_SECONDS,
            "sides": {},
        },
        versions=our_versions(),
    )
    for side in ("ours", "arq"):
        if args.only in (None, side):
            label = "ours" if side == "ours" else f"plain arq {arq.version.VERSION}"
            recorder.figure(f"{side}.delay_s", f"{label}: kill -9 to the next start", "s", "lower")
    try:
        server.start()
        r = Redis.from_url(server.url)
        log(f"redis-server on {server.url}; worker logs in {log_dir}")
        if args.only in (None, "ours"):
            log(f"ours: {args.trials} sequential trials")
            sides["ours"] = run_ours(
                args.trials, server.url, procs, r, random.Random(args.seed), args.lease, recorder
            )
            recorder.data["settings"]["ours"] = sides["ours"]["settings"]
            recorder.data["settings"]["sides"]["ours"] = (
                f"WORKER_LEASE_SECONDS={sides['ours']['settings']['WORKER_LEASE_SECONDS']:g}, "
                "rest default; trials one after another"
            )
        if args.only in (None, "arq"):
            log(f"plain arq: {args.trials} trials run concurrently (one queue each), ~5.5 min")
            sides["arq"] = run_arq(args.trials, server.url, procs, r, recorder)
            s = sides["arq"]["settings"]
            recorder.data["settings"]["arq"] = s
            recorder.data["settings"]["sides"]["arq"] = (
                f"arq defaults: job_timeout={s['job_timeout_s']:g}, so a "
                f"{s['in_progress_ttl_s']:g} s claim; trials concurrent, one queue each"
            )
        r.close()
        ok = True
    finally:
        procs.kill_all()
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        if ok and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif not ok:
            log(f"failed; worker logs kept in {log_dir}")
    recorder.finish()
    print(table(sides, {name: args.trials for name in sides}))
    if "arq" in sides:
        print(
            f"\nThe {args.trials} plain-arq trials ran concurrently (one queue and worker pair "
            "each, all killed at once); the trials of ours ran one after another."
        )
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
