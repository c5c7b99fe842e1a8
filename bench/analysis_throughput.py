"""I/O-bound throughput: analyses against a Messages API that answers in `--delay` seconds,
through ONE worker process, ours versus the Celery recipe's, in the same run.

    .venv/bin/python -m bench.analysis_throughput [--jobs 200] [--delay 1.0]
        [--only ours celery-prefork celery-gevent] [--our-configs 200/200 20/8] [--reps 3]
        [--celery-reps N] [--out PATH] [--quick]

Setup (all on 127.0.0.1, free ports): a private `redis-server`, moto's S3 server and the
fake Messages API (`tests.support.fake_anthropic.FakeAnthropic`, every answer after
`--delay` s). Redis is flushed before every run.

- `ours` (and `ours-<w>-<a>` for further `--our-configs`): the bucket, `--jobs` documents
  (`jobs.documents.Documents.create`) and as many `analysis` jobs (`JobStore.create`) are
  written first; then ONE worker, `arq jobs.worker.WorkerSettings`, starts with
  `WORKER_CONCURRENCY`/`ANALYSIS_CONCURRENCY` from `--our-configs` (the first, 200/200,
  sized for I/O-bound work, is `ours`). Each job loads its document from S3, calls the fake
  through `AsyncAnthropic`, stores the analysis in S3 and counts usage, exactly as in
  production. Times come from the job records.
- `celery-prefork`: the recipe (`bench/celery_recipe.py`) in its own virtualenv
  (`bench/.venv-celery`) as the recipe configures it: it sets no pool and no concurrency,
  so ONE worker, `celery -A bench.celery_recipe worker --pool=prefork`, at Celery's default
  concurrency (one process per CPU). A load generator enqueues `--jobs` tasks with
  `.delay(text)` first and waits for every result. Times come from marks each task writes
  to Redis.
- `celery-gevent`: the same recipe and task in ONE worker with the gevent pool at our
  concurrency (`--pool=gevent --concurrency=<ours' WORKER_CONCURRENCY>`), the pool Celery's
  docs give for I/O-bound tasks: the comparison at equal concurrency.

jobs/s = jobs / (last finish - first start); wall = last finish - worker process start
(so the worker's own start-up is in it). The sides run one after another within each
repetition, so ours/Celery is taken per repetition. Every wait has a deadline; every process
started here is stopped by its pid (its process group) in a `finally`. The figures go to
`bench/results/analysis_throughput.json` (`bench.common.Recorder`), worker logs next to it
(not tracked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench.common import (
    Recorder,
    add_common_args,
    celery_pool_settings,
    celery_versions,
    celery_worker_command,
    exit_on_sigterm,
    group_cpu_s,
    log,
    machine_busy_s,
    our_versions,
    process_cpu_s,
    ratio_values,
    require_celery_venv,
    spread,
)
from jobs.documents import Documents
from jobs.domains import REGISTRY
from jobs.engine import keys
from jobs.engine.records import JobState
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.processes import settings_env
from tests.support.services import RedisServer, S3Server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_OUT = RESULTS / "analysis_throughput.json"
LOG_DIR = RESULTS / "analysis_throughput_logs"
OUR_BIN = Path(sys.executable).parent
CELERY_BIN = ROOT / "bench" / ".venv-celery" / "bin"
CELERY_TIMES_KEY = "bench:celery:times"
CELERY_ENQUEUED_KEY = "bench:celery:enqueued"
CELERY_SIDES = ("celery-prefork", "celery-gevent")
# (WORKER_CONCURRENCY, ANALYSIS_CONCURRENCY): sized for I/O-bound work, then the defaults.
OUR_CONFIGS = ((200, 200), (20, 8))
POLL_S = 0.2
STOP_GRACE_S = 20.0
DOCUMENT_TEXT = (
    "Quarterly report. Revenue grew in every region; costs rose less than revenue. "
    "The board approved the plan for next year and asked for a review of suppliers. "
) * 12  # about 2 KB


@dataclass
class Stack:
    """The services every run shares."""

    redis: RedisServer
    s3: S3Server
    fake: FakeAnthropic
    delay_s: float

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def reset(self) -> None:
        """Empty Redis and the fake's request log; the fake's delay stays `delay_s`."""
        with Redis.from_url(self.redis_url()) as client:
            client.flushall()
        self.fake.reset()
        self.fake.delay_s = self.delay_s


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A child in its own process group (so its own children can be stopped with it)."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it outlives the grace."""
    if proc is None:
        return
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {STOP_GRACE_S:g}s; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its children too, if any outlived it
    proc.wait(10)


@dataclass
class CpuMeter:
    """CPU seconds used by the shared services (and this process: the fake Messages API and
    the waiting loop) between `start()` and `read()`."""

    stack: Stack
    start_s: dict[str, float] | None = None
    loadavg_1m: float = 0.0

    def _now(self) -> dict[str, float]:
        redis_proc, s3_proc = self.stack.redis.proc, self.stack.s3.proc
        return {
            "redis": process_cpu_s(redis_proc.pid) if redis_proc else 0.0,
            "s3_moto": process_cpu_s(s3_proc.pid) if s3_proc else 0.0,
            "fake_claude_and_driver": time.process_time(),
            "machine": machine_busy_s(),
        }

    def start(self) -> None:
        self.start_s = self._now()
        self.loadavg_1m = os.getloadavg()[0]

    def read(self, **workers: float) -> dict[str, float]:
        """The services' CPU seconds since `start()`, plus `workers` (already totals), and
        `other`: what the rest of the machine used meanwhile (other people's processes)."""
        assert self.start_s is not None
        now = self._now()
        used = {name: now[name] - self.start_s[name] for name in now}
        machine = used.pop("machine")
        known = {**workers, **used}
        known["other"] = max(0.0, machine - sum(known.values()))
        return {name: round(cpu, 2) for name, cpu in known.items()}


# ---------------------------------------------------------------------------- ours


def our_settings(stack: Stack, worker_concurrency: int, analysis_concurrency: int) -> Settings:
    return Settings(
        _env_file=None,
        environment="development",
        redis_url=stack.redis_url(),
        s3_endpoint_url=stack.s3.url,
        s3_bucket="bench",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        anthropic_api_key="sk-bench",
        anthropic_base_url=stack.fake.url,
        worker_metrics_port=0,
        worker_concurrency=worker_concurrency,
        analysis_concurrency=analysis_concurrency,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    """`settings_env`, with every secret given in clear (it unwraps only the ones it knows)."""
    env = settings_env(settings)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            env[name.upper()] = value.get_secret_value()
    return env


async def prepare_ours(settings: Settings, jobs: int) -> list[str]:
    """The bucket, `jobs` documents and one queued analysis job per document."""
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        async with open_storage(settings) as storage:
            await storage.ensure_bucket()
            documents = Documents(redis, storage, settings.max_document_bytes)
            metas = [
                await documents.create(
                    account="bench", user_id="u1", title=None, text=DOCUMENT_TEXT
                )
                for _ in range(jobs)
            ]
        store = JobStore(redis, settings, REGISTRY)
        return [
            (
                await store.create(
                    kind="analysis",
                    account="bench",
                    args={"document_id": meta.id, "instructions": None},
                )
            ).job_id
            for meta in metas
        ]
    finally:
        await redis.aclose()


async def wait_ours(
    settings: Settings, proc: subprocess.Popen, job_ids: list[str], timeout_s: float
) -> list[dict[str, Any]]:
    """Wait (bounded) until no job is unfinished, then read every record."""
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            unfinished = await redis.zcard(keys.ACTIVE)
            if unfinished == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"our worker exited ({proc.returncode}) with jobs unfinished")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{unfinished} jobs still unfinished after {timeout_s:g}s")
            await asyncio.sleep(POLL_S)
        records = await JobStore(redis, settings, REGISTRY).get_many(job_ids)
    finally:
        await redis.aclose()
    return [
        {
            "id": r.id,
            "state": r.state.value,
            "attempt": r.attempt,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "attempts": [
                {k: a.get(k) for k in ("started_at", "duration_ms", "outcome")} for a in r.attempts
            ],
        }
        for r in records
    ]


def run_ours(
    stack: Stack,
    jobs: int,
    worker_concurrency: int,
    analysis_concurrency: int,
    rep: int,
    side: str = "ours",
) -> dict[str, Any]:
    stack.reset()
    settings = our_settings(stack, worker_concurrency, analysis_concurrency)
    label = f"ours-{worker_concurrency}-{analysis_concurrency}-{rep}"
    log(f"{label}: creating {jobs} documents and analysis jobs")
    job_ids = asyncio.run(prepare_ours(settings, jobs))
    log_path = LOG_DIR / f"{label}.log"
    log_path.unlink(missing_ok=True)
    ideal_s = jobs * stack.delay_s / min(worker_concurrency, analysis_concurrency)
    timeout_s = 120.0 + 3 * ideal_s
    proc = None
    meter = CpuMeter(stack)
    try:
        meter.start()
        proc = start_process(
            [str(OUR_BIN / "arq"), "jobs.worker.WorkerSettings"], worker_env(settings), log_path
        )
        spawned = time.time()
        log(f"{label}: worker pid {proc.pid} started; waiting up to {timeout_s:.0f}s")
        records = asyncio.run(wait_ours(settings, proc, job_ids, timeout_s))
        cpu_s = meter.read(worker=group_cpu_s(proc.pid))
    finally:
        stop_process(proc)
    states: dict[str, int] = {}
    for r in records:
        states[r["state"]] = states.get(r["state"], 0) + 1
    ok = [r for r in records if r["state"] == JobState.SUCCEEDED.value]
    if len(ok) != jobs:
        raise RuntimeError(f"{label}: {states} (want {jobs} succeeded); see {log_path}")
    first_start = min(r["started_at"] for r in ok) / 1000
    last_finish = max(r["finished_at"] for r in ok) / 1000
    durations = [(r["finished_at"] - r["started_at"]) / 1000 for r in ok]
    claude_at = sorted(q["at"] for q in stack.fake.requests)
    result = {
        "side": side,
        "settings": f"WORKER_CONCURRENCY={worker_concurrency}, "
        f"ANALYSIS_CONCURRENCY={analysis_concurrency}",
        "worker_concurrency": worker_concurrency,
        "analysis_concurrency": analysis_concurrency,
        "rep": rep,
        "jobs": jobs,
        "states": states,
        "extra_attempts": sum(r["attempt"] - 1 for r in ok),
        "jobs_per_s": jobs / (last_finish - first_start),
        "wall_s": last_finish - spawned,
        "worker_startup_s": first_start - spawned,
        "busy_span_s": last_finish - first_start,
        "job_duration_s": spread(durations),
        "claude_requests": len(claude_at),
        "claude_max_in_flight": stack.fake.max_in_flight,
        "claude_first_request_after_start_s": claude_at[0] - first_start if claude_at else None,
        "claude_last_request_after_start_s": claude_at[-1] - first_start if claude_at else None,
        # From the worker's spawn to the last finish; the worker's includes its start-up.
        "cpu_s": cpu_s,
        "loadavg_1m_at_start": meter.loadavg_1m,
        "log": str(log_path.relative_to(ROOT)),
    }
    log(
        f"{label}: {result['jobs_per_s']:.2f} jobs/s, wall {result['wall_s']:.1f}s, "
        f"startup {result['worker_startup_s']:.2f}s, max in flight "
        f"{result['claude_max_in_flight']}, CPU s {cpu_s}"
    )
    return result


# -------------------------------------------------------------------------- celery


def celery_env(stack: Stack) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "ANTHROPIC_", "BENCH_", "VIRTUAL_ENV"))
    }
    env.update(
        CELERY_BROKER_URL=stack.redis_url(0),
        CELERY_RESULT_BACKEND=stack.redis_url(1),
        BENCH_TIMES_URL=stack.redis_url(0),
        BENCH_TIMES_KEY=CELERY_TIMES_KEY,
        ANTHROPIC_BASE_URL=stack.fake.url,
        ANTHROPIC_API_KEY="sk-bench",
        ANALYSIS_MODEL=Settings.model_fields["analysis_model"].default,
        ANALYSIS_MAX_TOKENS=str(Settings.model_fields["analysis_max_tokens"].default),
        PYTHONPATH=str(ROOT),
    )
    return env


def wait_enqueued(client: Redis, generator: subprocess.Popen, jobs: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (client.get(CELERY_ENQUEUED_KEY) or b"").decode() != str(jobs):
        if generator.poll() is not None:
            raise RuntimeError(f"the Celery load generator exited ({generator.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Celery tasks were not enqueued within {timeout_s:g}s")
        time.sleep(POLL_S)


def celery_pool(side: str, our_concurrency: int) -> tuple[str, int | None]:
    """(pool, concurrency) of a Celery side: the recipe's own (prefork at Celery's default
    concurrency), or gevent at our concurrency."""
    if side == "celery-gevent":
        return "gevent", our_concurrency
    return "prefork", None


def run_celery(
    stack: Stack, jobs: int, rep: int, side: str, our_concurrency: int
) -> dict[str, Any]:
    stack.reset()
    pool, concurrency = celery_pool(side, our_concurrency)
    slots = concurrency or os.cpu_count() or 1
    label = f"{side}-{rep}"
    env = celery_env(stack)
    text_path = LOG_DIR / "document.txt"
    text_path.write_text(DOCUMENT_TEXT)
    generator_log = LOG_DIR / f"{label}-generator.log"
    worker_log = LOG_DIR / f"{label}-worker.log"
    summary_path = LOG_DIR / f"{label}-summary.json"
    for path in (generator_log, worker_log, summary_path):
        path.unlink(missing_ok=True)
    timeout_s = 120.0 + 3 * jobs * stack.delay_s / slots
    generator = worker = None
    meter = CpuMeter(stack)
    try:
        with open(summary_path, "wb") as summary_out, open(generator_log, "ab") as err:
            generator = subprocess.Popen(
                [str(CELERY_BIN / "python"), "-m", "bench.celery_recipe", "--jobs", str(jobs),
                 "--text-file", str(text_path), "--timeout", str(timeout_s)],
                cwd=ROOT, env=env, stdout=summary_out, stderr=err, start_new_session=True,
            )  # fmt: skip
        log(f"{label}: load generator pid {generator.pid} enqueueing {jobs} tasks")
        with Redis.from_url(stack.redis_url()) as client:
            wait_enqueued(client, generator, jobs, 120.0)
        meter.start()
        generator_cpu_s = group_cpu_s(generator.pid)
        worker = start_process(celery_worker_command(pool, concurrency), env, worker_log)
        spawned = time.time()
        log(f"{label}: worker pid {worker.pid} started; waiting up to {timeout_s:.0f}s")
        try:
            generator.wait(timeout_s + 30)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{label}: results not all in after {timeout_s + 30:g}s") from None
        cpu_s = meter.read(worker=group_cpu_s(worker.pid))
        with Redis.from_url(stack.redis_url()) as client:
            marks = [json.loads(m) for m in client.lrange(CELERY_TIMES_KEY, 0, -1)]
    finally:
        stop_process(worker)
        stop_process(generator)
    if generator.returncode != 0:
        raise RuntimeError(f"{label}: the load generator failed; see {generator_log}")
    summary = json.loads(summary_path.read_text())
    if summary["states"] != {"SUCCESS": jobs} or len(marks) != jobs:
        raise RuntimeError(f"{label}: {summary['states']}, {len(marks)} marks; see {worker_log}")
    # The generator's CPU while it waited for results (it has exited: it reports its own).
    waiting_cpu_s = max(0.0, summary["cpu_s"] - generator_cpu_s)
    cpu_s["load_generator"] = round(waiting_cpu_s, 2)
    cpu_s["other"] = round(max(0.0, cpu_s["other"] - waiting_cpu_s), 2)
    first_start = min(m["started"] for m in marks)
    last_finish = max(m["finished"] for m in marks)
    claude_at = sorted(q["at"] for q in stack.fake.requests)
    result = {
        "side": side,
        "settings": f"the recipe's task, {celery_pool_settings(pool, concurrency)}",
        "pool": pool,
        "concurrency": slots,
        "rep": rep,
        "jobs": jobs,
        "states": summary["states"],
        "jobs_per_s": jobs / (last_finish - first_start),
        "wall_s": last_finish - spawned,
        "worker_startup_s": first_start - spawned,
        "busy_span_s": last_finish - first_start,
        "all_results_seen_s": summary["done_at"] - spawned,
        "job_duration_s": spread([m["finished"] - m["started"] for m in marks]),
        "worker_pids": len({m["pid"] for m in marks}),
        "claude_requests": len(claude_at),
        "claude_max_in_flight": stack.fake.max_in_flight,
        "cpu_s": cpu_s,
        "loadavg_1m_at_start": meter.loadavg_1m,
        "sample": summary["sample"],
        "log": str(worker_log.relative_to(ROOT)),
    }
    log(
        f"{label}: {result['jobs_per_s']:.2f} jobs/s, wall {result['wall_s']:.1f}s, "
        f"startup {result['worker_startup_s']:.2f}s, max in flight "
        f"{result['claude_max_in_flight']}, CPU s {cpu_s}"
    )
    return result


# ------------------------------------------------------------------------- report


def our_sides(configs: list[str]) -> dict[str, tuple[int, int]]:
    """Side id -> (WORKER_CONCURRENCY, ANALYSIS_CONCURRENCY): the first config is `ours`."""
    sides: dict[str, tuple[int, int]] = {}
    for i, config in enumerate(configs):
        worker_concurrency, analysis_concurrency = map(int, config.split("/"))
        side = "ours" if i == 0 else f"ours-{worker_concurrency}-{analysis_concurrency}"
        sides[side] = (worker_concurrency, analysis_concurrency)
    return sides


def declare(recorder: Recorder, sides: list[str]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side in sides:
        recorder.figure(f"{side}.jobs_per_s", f"{side}: jobs/s", "jobs/s", "higher")
        recorder.figure(f"{side}.wall_s", f"{side}: wall, start-up included", "s", "lower")
        recorder.figure(f"{side}.worker_cpu_s", f"{side}: worker CPU", "s", "lower", digits=1)
        recorder.figure(
            f"{side}.claude_max_in_flight", f"{side}: Claude calls in flight, max", "calls",
            None, digits=0,
        )  # fmt: skip
        recorder.figure(f"{side}.other_cpu_s", f"{side}: CPU of other processes", "s", None)
    for celery in CELERY_SIDES:
        if "ours" in sides and celery in sides:
            recorder.figure(
                f"ratio.ours_over_{celery.replace('-', '_')}", f"ours/{celery} jobs/s", "x",
                "higher",
            )  # fmt: skip


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    side = result["side"]
    recorder.add(f"{side}.jobs_per_s", result["jobs_per_s"])
    recorder.add(f"{side}.wall_s", result["wall_s"])
    recorder.add(f"{side}.worker_cpu_s", result["cpu_s"]["worker"])
    recorder.add(f"{side}.claude_max_in_flight", result["claude_max_in_flight"])
    recorder.add(f"{side}.other_cpu_s", result["cpu_s"]["other"])


def record_ratios(recorder: Recorder, runs: list[dict[str, Any]], rep: int) -> None:
    """ours/each Celery side, from this repetition's runs."""
    rates = {r["side"]: r["jobs_per_s"] for r in runs if r["rep"] == rep}
    for celery in CELERY_SIDES:
        if "ours" in rates and celery in rates:
            for value in ratio_values([rates["ours"]], [rates[celery]]):
                recorder.add(f"ratio.ours_over_{celery.replace('-', '_')}", value)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["side"], []).append(run)
    return [
        {
            "side": side,
            "settings": group[0]["settings"],
            "runs": len(group),
            "jobs_per_s": spread([r["jobs_per_s"] for r in group]),
            "wall_s": spread([r["wall_s"] for r in group]),
            "claude_max_in_flight": max(r["claude_max_in_flight"] for r in group),
            "cpu_s_median": {
                name: round(statistics.median(r["cpu_s"][name] for r in group), 2)
                for name in group[0]["cpu_s"]
            },
        }
        for side, group in groups.items()
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| side | settings | runs | jobs/s median [min-max] | wall s median [min-max] "
        "| Claude calls in flight (max) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        j, w = row["jobs_per_s"], row["wall_s"]
        lines.append(
            f"| {row['side']} | {row['settings']} | {row['runs']} "
            f"| {j['median']:.2f} [{j['min']:.2f}-{j['max']:.2f}] "
            f"| {w['median']:.1f} [{w['min']:.1f}-{w['max']:.1f}] "
            f"| {row['claude_max_in_flight']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--delay", type=float, default=1.0, help="the fake's answer time (s)")
    parser.add_argument("--only", nargs="+", choices=("ours", *CELERY_SIDES))
    parser.add_argument(
        "--our-configs",
        nargs="+",
        default=[f"{w}/{a}" for w, a in OUR_CONFIGS],
        help="our WORKER_CONCURRENCY/ANALYSIS_CONCURRENCY pairs (default: 200/200 20/8); "
        "the first is `ours`, compared with Celery",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--celery-reps", type=int, help="Celery runs (default: --reps)")
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args()
    exit_on_sigterm()
    celery_reps = args.reps if args.celery_reps is None else args.celery_reps
    ours = our_sides(args.our_configs) if not args.only or "ours" in args.only else {}
    celery = [c for c in CELERY_SIDES if not args.only or c in args.only]
    require_celery_venv(["celery"] if celery else [])
    our_concurrency = next(iter(our_sides(args.our_configs).values()))[0]
    sides = {
        side: f"WORKER_CONCURRENCY={w}, ANALYSIS_CONCURRENCY={a}" for side, (w, a) in ours.items()
    }
    for side in celery:
        pool = celery_pool_settings(*celery_pool(side, our_concurrency))
        sides[side] = f"the recipe's task, {pool}"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(
        "analysis_throughput",
        args.out,
        quick=args.quick,
        settings={
            "jobs": args.jobs,
            "claude_delay_s": args.delay,
            "reps": args.reps,
            "celery_reps": celery_reps,
            "sides": sides,
            "ours_work": "reads its document from S3, calls the fake Messages API through "
            "AsyncAnthropic, writes the analysis to S3 and counts usage",
            "celery_work": "the recipe's task: calls the fake Messages API through the sync "
            "Anthropic client (a new client per task), no S3",
        },
        versions={"ours": our_versions(), "celery": celery_versions() if celery else None},
    )
    declare(recorder, list(sides))
    runs: list[dict[str, Any]] = []
    redis_server = RedisServer()
    s3_server = S3Server()
    fake = FakeAnthropic(delay_s=args.delay)
    try:
        redis_server.start()
        s3_server.start()
        fake.start()
        stack = Stack(redis_server, s3_server, fake, args.delay)
        log(f"redis {redis_server.url}, S3 {s3_server.url}, fake Claude {fake.url}")
        for rep in range(1, max(args.reps, celery_reps) + 1):
            found: list[dict[str, Any]] = []
            if rep <= args.reps:
                for side, (worker_concurrency, analysis_concurrency) in ours.items():
                    found.append(
                        run_ours(stack, args.jobs, worker_concurrency, analysis_concurrency,
                                 rep, side)
                    )  # fmt: skip
                    record(recorder, found[-1])
                    recorder.run(found[-1])
            if rep <= celery_reps:
                for side in celery:
                    found.append(run_celery(stack, args.jobs, rep, side, our_concurrency))
                    record(recorder, found[-1])
                    recorder.run(found[-1])
            runs += found
            record_ratios(recorder, runs, rep)
            recorder.save()
    finally:
        fake.stop()
        s3_server.stop()
        redis_server.stop()
    recorder.finish()
    print(f"\n{args.jobs} analyses, the fake Messages API answering in {args.delay:g}s, "
          "ONE worker process per side\n")  # fmt: skip
    print(table(summarize(runs)))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
