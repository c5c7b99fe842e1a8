"""Enqueue-to-start latency on an idle system, and the idle worker's CPU, for this service
(through its HTTP API) and its peers.

    .venv/bin/python -m bench.latency [--probes 60] [--reps 3] [--idle 10] [--only SIDE ...]

Each side runs ONE worker process against a private redis-server (flushed per run):

- `ours`: `uvicorn api.main:app` (1 process) and the production worker with its export
  handler marked (`arq bench.workers.MarkedWorkerSettings`), every setting at its default
  (`WORKER_POLL_DELAY_SECONDS`, 0.25 s), with moto's S3 server. A probe is `POST
  /v1/exports` (bearer key, `Idempotency-Key`) for a user with no documents; the start is
  the mark the export handler pushes when it starts, as a peer's job does. The job record's
  `started_at` (ms, when our job layer takes the job, before the handler) is kept beside it.
- `arq-defaults` (`poll_delay=0.5`, `max_jobs=10`) and `arq-tuned` (`poll_delay=0.01`,
  `max_jobs=100`): a probe is `enqueue_job("bench_mark")`.
- `saq`: SAQ 0.26 at its defaults; a probe is `queue.enqueue("mark")`.
- `celery`: the Celery recipe (prefetch 1, acks late; Celery's default prefork pool and
  concurrency) from `bench/.venv-celery`; a probe is `mark.delay()`, sent by a prober in
  that virtualenv.

Every side's probe job pushes `time.time()` when its handler starts. Latency = that - the
wall-clock time just before the enqueue call (ours: before the POST; one host clock). Probes
go one at a time: each waits until the previous job ran (ours: finished), then a random
50-600 ms (longer than arq's default 0.5 s poll), so every probe meets an idle worker at a
random point of its poll cycle. Three warm-up probes are not counted.

Idle CPU: after the warm-up and 2 s of quiet, the CPU seconds the worker (its whole process
group: Celery's includes its pool processes) used over `--idle` seconds, as a share of one
core, read from /proc/<pid>/stat.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import time
import uuid
from typing import Any

import httpx
from arq.connections import RedisSettings, create_pool
from redis import Redis

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
    percentile,
    require_celery_venv,
    service_free_env,
    spread,
    wait_for,
)
from bench.workers import ARQ_TUNED_MAX_JOBS, ARQ_TUNED_POLL_S, MARKS_KEY, PLAIN_MARK, json_dumps
from jobs.engine.keys import record as record_key
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.services import RedisServer, S3Server, free_port

DEFAULT_OUT = RESULTS / "latency.json"
LOG_DIR = RESULTS / "latency_logs"
SIDES = ("ours", "arq-defaults", "arq-tuned", "saq", "celery")
API_KEY = "bench-latency-key"
# Wider than arq's default 0.5 s poll: a probe sent a fixed time after the previous job
# started (at a poll tick) would otherwise always land at the same part of the poll cycle.
GAP_S = (0.05, 0.60)
WARMUP_PROBES = 3
QUIET_S = 2.0


def _default(name: str) -> object:
    return Settings.model_fields[name].default


def side_settings(side: str) -> str:
    return {
        "ours": "HTTP API; defaults (WORKER_POLL_DELAY_SECONDS="
        f"{_default('worker_poll_delay_seconds')}, "
        f"WORKER_CONCURRENCY={_default('worker_concurrency')})",
        "arq-defaults": "enqueue_job; defaults (poll_delay=0.5, max_jobs=10)",
        "arq-tuned": f"enqueue_job; poll_delay={ARQ_TUNED_POLL_S}, max_jobs={ARQ_TUNED_MAX_JOBS}",
        "saq": "queue.enqueue; defaults (concurrency=10)",
        "celery": f"mark.delay(); the recipe: {celery_pool_settings()}",
    }[side]


def our_env(redis_url: str, s3_url: str) -> dict[str, str]:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return service_free_env(
        {
            "REDIS_URL": redis_url,
            "S3_ENDPOINT_URL": s3_url,
            "S3_BUCKET": "bench",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "API_KEYS": json.dumps({"bench": [f"sha256:{digest}"]}),
            "WORKER_METRICS_PORT": "0",
        }
    )


def celery_env(redis_url: str) -> dict[str, str]:
    base = redis_url.rsplit("/", 1)[0]
    return service_free_env(
        {
            "CELERY_BROKER_URL": f"{base}/0",
            "CELERY_RESULT_BACKEND": f"{base}/1",
            "BENCH_TIMES_URL": f"{base}/0",
        }
    )


class Probe:
    """Sends one job at a time and tells when it started (epoch seconds)."""

    api_ms: list[float] = []  # noqa: RUF012 - only OurProbe fills its own
    record_ms: list[float] = []  # noqa: RUF012 - only OurProbe fills its own

    def send(self) -> tuple[float, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the clients."""


class OurProbe(Probe):
    """POST /v1/exports; the start is the mark the export handler pushes as it starts."""

    def __init__(self, api_url: str, redis_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=30)
        self.redis = Redis.from_url(redis_url)
        self.api_ms: list[float] = []  # how long each POST took to answer
        self.record_ms: list[float] = []  # the record's started_at - sent (before the handler)

    def send(self) -> tuple[float, float]:
        self.redis.delete(MARKS_KEY)
        sent = time.time()
        answer = self.http.post(
            "/v1/exports",
            json={"user_id": "u1", "format": "zip"},
            headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex},
        )
        self.api_ms.append(1000 * (time.time() - sent))
        if answer.status_code != 202:
            raise RuntimeError(f"POST /v1/exports answered {answer.status_code}: {answer.text}")
        mark = self.redis.blpop([MARKS_KEY], timeout=30)
        if mark is None:
            raise TimeoutError("a probe's export handler did not start within 30 s")
        key = record_key(answer.json()["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # one probe at a time: wait for the job's end
            state, started = self.redis.hmget(key, "state", "started_at")
            if state in (b"succeeded", b"failed", b"cancelled"):
                if state != b"succeeded":
                    raise RuntimeError(f"probe job ended {state!r}")
                self.record_ms.append(int(started) - 1000 * sent)
                return sent, float(mark[1])
            time.sleep(0.002)
        raise TimeoutError("a probe job did not finish within 30 s")

    def close(self) -> None:
        self.http.close()
        self.redis.close()


class AsyncPeerProbe(Probe):
    """arq or SAQ: enqueue from this process, wait for the job's start mark with BLPOP."""

    def __init__(self, side: str, redis_url: str) -> None:
        self.side = side
        self.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.marks = Redis.from_url(redis_url)
        self.client: Any = self.loop.run_until_complete(self._connect())

    async def _connect(self) -> Any:
        if self.side == "saq":
            from bench.saq_worker import queue

            q = queue(self.redis_url)
            await q.connect()
            return q
        return await create_pool(RedisSettings.from_dsn(self.redis_url), job_serializer=json_dumps)

    async def _enqueue(self) -> None:
        if self.side == "saq":
            await self.client.enqueue("mark")
        else:
            await self.client.enqueue_job(PLAIN_MARK)

    def send(self) -> tuple[float, float]:
        sent = time.time()
        self.loop.run_until_complete(self._enqueue())
        answer = self.marks.blpop([MARKS_KEY], timeout=30)
        if answer is None:
            raise TimeoutError(f"a {self.side} probe did not start within 30 s")
        return sent, float(answer[1])

    def close(self) -> None:
        if self.side == "saq":
            self.loop.run_until_complete(self.client.disconnect())
        else:
            self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.marks.close()


def start_side(
    side: str, children: Children, redis_url: str, s3: S3Server | None, rep: int
) -> tuple[subprocess.Popen, Probe]:
    """Start the side's worker (and our API) and a probe for it."""
    if side == "ours":
        assert s3 is not None
        env = our_env(redis_url, s3.url)
        asyncio.run(_ensure_bucket(env))
        port = free_port()
        children.start(
            [str(OUR_BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port",
             str(port), "--no-access-log"],
            env, f"ours-api-{rep}",
        )  # fmt: skip
        worker = children.start(
            [str(OUR_BIN / "arq"), "bench.workers.MarkedWorkerSettings"], env, f"ours-worker-{rep}"
        )
        api_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(api_url), 60, "our API", 0.2)
        return worker, OurProbe(api_url, redis_url)
    if side in ("arq-defaults", "arq-tuned"):
        target = "PlainArqWorkerSettings" if side == "arq-defaults" else "TunedArqWorkerSettings"
        env = service_free_env({"REDIS_URL": redis_url})
        worker = children.start(
            [str(OUR_BIN / "arq"), f"bench.workers.{target}"], env, f"{side}-{rep}"
        )
        return worker, AsyncPeerProbe(side, redis_url)
    if side == "saq":
        env = service_free_env({"REDIS_URL": redis_url})
        worker = children.start(
            [str(OUR_BIN / "saq"), "bench.saq_worker.settings"], env, f"saq-{rep}"
        )
        return worker, AsyncPeerProbe(side, redis_url)
    raise ValueError(side)


async def _ensure_bucket(env: dict[str, str]) -> None:
    settings = Settings(
        _env_file=None,
        environment="development",
        redis_url=env["REDIS_URL"],
        s3_endpoint_url=env["S3_ENDPOINT_URL"],
        s3_bucket=env["S3_BUCKET"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    async with open_storage(settings) as storage:
        await storage.ensure_bucket()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def idle_cpu(worker: subprocess.Popen, seconds: float, quiet_s: float = QUIET_S) -> float:
    """The worker's process group's CPU over `seconds` (after `quiet_s`), as a share (%)
    of one core."""
    time.sleep(quiet_s)
    before = group_cpu_s(worker.pid)
    clock = time.monotonic()
    time.sleep(seconds)
    used = group_cpu_s(worker.pid) - before
    return 100 * used / (time.monotonic() - clock)


def run_probes(probe: Probe, count: int, rng: random.Random) -> list[float]:
    latencies = []
    for _ in range(count):
        time.sleep(rng.uniform(*GAP_S))
        sent, started = probe.send()
        latencies.append(1000 * (started - sent))
    return latencies


def run_celery(
    children: Children, redis_url: str, probes: int, idle_s: float, quiet_s: float, rep: int
) -> tuple[float, list[float]]:
    env = celery_env(redis_url)
    worker = children.start(celery_worker_command(), env, f"celery-{rep}")
    try:
        prober = [str(CELERY_BIN / "python"), "-m", "bench.celery_recipe", "--timeout", "60"]
        gaps = ["--gap-min", str(GAP_S[0]), "--gap-max", str(GAP_S[1])]
        _celery_probe([*prober, "--probes", str(WARMUP_PROBES), *gaps], env, 120)
        cpu = idle_cpu(worker, idle_s, quiet_s)
        samples = _celery_probe([*prober, "--probes", str(probes), *gaps], env, 60 + probes)
    finally:
        children.stop(worker)
    return cpu, [1000 * (started - sent) for sent, started in samples]


def _celery_probe(args: list[str], env: dict[str, str], timeout_s: float) -> list[list[float]]:
    answer = subprocess.run(
        args, cwd=RESULTS.parents[1], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if answer.returncode != 0:
        raise RuntimeError(f"the Celery prober failed: {answer.stderr[-2000:]}")
    return json.loads(answer.stdout)["samples"]


def run_once(
    side: str, children: Children, server: RedisServer, s3: S3Server | None, args: Any, rep: int
) -> dict[str, Any]:
    with Redis.from_url(server.url) as r:
        r.flushall()
    if s3 is not None:
        s3.reset()
    rng = random.Random(rep)
    meter = MachineMeter().start()
    api_ms: list[float] = []
    record_ms: list[float] = []
    if side == "celery":
        cpu, latencies = run_celery(children, server.url, args.probes, args.idle, args.quiet, rep)
    else:
        worker, probe = start_side(side, children, server.url, s3, rep)
        try:
            run_probes(probe, WARMUP_PROBES, rng)  # also: the worker is up
            cpu = idle_cpu(worker, args.idle, args.quiet)
            probe.api_ms, probe.record_ms = [], []
            latencies = run_probes(probe, args.probes, rng)
            api_ms, record_ms = list(probe.api_ms), list(probe.record_ms)
        finally:
            probe.close()
            children.stop_all()
    result = {
        "side": side,
        "settings": side_settings(side),
        "rep": rep,
        "probes": len(latencies),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "min": min(latencies),
        },
        "idle_cpu_percent": round(cpu, 3),
        "samples_ms": [round(v, 3) for v in latencies],
        # ours: how long the POST took to answer (the job may start before the answer)
        "api_answer_ms": {"p50": percentile(api_ms, 50), "p99": percentile(api_ms, 99)}
        if api_ms
        else None,
        # ours: the job record's started_at (ms resolution), when the job layer took the job
        "record_started_ms": {
            "p50": percentile(record_ms, 50),
            "p99": percentile(record_ms, 99),
        }
        if record_ms
        else None,
        "machine": meter.read(),
    }
    lat = result["latency_ms"]
    log(
        f"{side} rep {rep}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"idle CPU {cpu:.2f}% of a core"
    )
    return result


def declare(recorder: Recorder, sides: list[str]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side in sides:
        recorder.figure(f"{side}.p50_ms", f"{side}: p50", "ms", "lower", digits=1)
        recorder.figure(f"{side}.p99_ms", f"{side}: p99", "ms", "lower", digits=1)
        recorder.figure(
            f"{side}.idle_cpu_percent", f"{side}: idle worker CPU", "% of a core", "lower",
            digits=2,
        )  # fmt: skip
    if "ours" in sides:
        recorder.figure(
            "ours.record_started_p50_ms", "ours: p50 to the record's started_at", "ms", "lower",
            digits=1,
        )  # fmt: skip
        recorder.figure(
            "ours.post_answer_p50_ms", "ours: POST answered, p50", "ms", "lower", digits=1
        )
    recorder.figure("other_cpu_s", "CPU other processes used per run", "s", None, digits=1)


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    side, lat = result["side"], result["latency_ms"]
    recorder.add(f"{side}.p50_ms", lat["p50"])
    recorder.add(f"{side}.p99_ms", lat["p99"])
    recorder.add(f"{side}.idle_cpu_percent", result["idle_cpu_percent"])
    if result.get("record_started_ms"):
        recorder.add("ours.record_started_p50_ms", result["record_started_ms"]["p50"])
    if result.get("api_answer_ms"):
        recorder.add("ours.post_answer_p50_ms", result["api_answer_ms"]["p50"])
    recorder.add("other_cpu_s", result["machine"]["other_cpu_s"])


def record_pooled(recorder: Recorder, runs: list[dict[str, Any]], sides: list[str]) -> None:
    """Each side's p99 over the probes of all its repetitions together."""
    for side in sides:
        pooled = [v for r in runs if r["side"] == side for v in r["samples_ms"]]
        if pooled:
            figure = f"{side}.pooled_p99_ms"
            recorder.figure(
                figure, f"{side}: pooled p99", "ms", "lower", digits=1,
                basis=f"pooled over {len(pooled)} probes",
            )  # fmt: skip
            recorder.data["figures"][figure]["values"] = [round(percentile(pooled, 99), 4)]


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
                "p50_ms": spread([r["latency_ms"]["p50"] for r in group]),
                "p99_ms": spread([r["latency_ms"]["p99"] for r in group]),
                "idle_cpu_percent": spread([r["idle_cpu_percent"] for r in group]),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| side | settings | p50 ms | p99 ms | idle CPU % of a core |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        p50, p99, cpu = row["p50_ms"], row["p99_ms"], row["idle_cpu_percent"]
        lines.append(
            f"| {row['side']} | {row['settings']} "
            f"| {p50['median']:.1f} [{p50['min']:.1f}-{p50['max']:.1f}] "
            f"| {p99['median']:.1f} [{p99['min']:.1f}-{p99['max']:.1f}] "
            f"| {cpu['median']:.2f} [{cpu['min']:.2f}-{cpu['max']:.2f}] |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=60, help="probes per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU window (s)")
    parser.add_argument("--quiet", type=float, default=QUIET_S, help="quiet before it (s)")
    parser.add_argument("--only", nargs="+", choices=SIDES)
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    sides = [s for s in SIDES if not args.only or s in args.only]
    require_celery_venv(sides)
    recorder = Recorder(
        "latency",
        args.out,
        quick=args.quick,
        settings={
            "probes_per_rep": args.probes,
            "reps": args.reps,
            "warmup_probes": WARMUP_PROBES,
            "idle_window_s": args.idle,
            "quiet_before_idle_s": args.quiet,
            "gap_ms": [round(1000 * g) for g in GAP_S],
            "stamp": "every side's job pushes time.time() as its handler starts",
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
    s3 = S3Server() if "ours" in sides else None
    children = Children(LOG_DIR)
    try:
        server.start()
        if s3 is not None:
            s3.start()
        for rep in range(1, args.reps + 1):
            for side in sides:
                result = run_once(side, children, server, s3, args, rep)
                runs.append(result)
                record(recorder, result)
                recorder.run(result)
    finally:
        children.stop_all()
        if s3 is not None:
            s3.stop()
        server.stop()
    record_pooled(recorder, runs, sides)
    recorder.finish()
    print(f"\nenqueue-to-start latency, {args.probes} probes x {args.reps} reps, idle system\n")
    print(table(summarize(runs)))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
