"""Fairness between accounts, and one Claude budget for every worker (issue 12).

    .venv/bin/python -m bench.fairness [--backlogs 200 2000] [--quiet-jobs 20]
        [--quiet-over 10] [--delay 1.0] [--concurrency 50] [--budget-jobs 300]
        [--budget-rpm 120] [--budget-burst 10] [--only SIDE ...] [--reps 3] [--out PATH]
        [--quick]

Everything runs against a private `redis-server`, moto's S3 server and the fake Messages API
(`tests.support.fake_anthropic.FakeAnthropic`, in this process), all on 127.0.0.1.

**Noisy neighbour.** For each backlog size N (`--backlogs`) and each side: the side's
processes start and answer a warm-up job (its call reaches the fake); then account A (noisy)
enqueues N analyses at once, and right after, account B (quiet) enqueues `--quiet-jobs`
analyses spread evenly over `--quiet-over` seconds. Every document carries a token in its
text (`bench-token:<id>`), so each call the fake receives is matched to its job. B's wait =
the time the fake received the first call of a B job (its request log's `at`) - the
wall-clock time just before B's POST (ours) or enqueue call (the peers). A side stops as
soon as every B call has been received: A's backlog need not drain. Sides, each ONE worker
process with the same concurrency toward Claude (`--concurrency`, C):

- `ours`: `uvicorn api.main:app` and `arq jobs.worker.WorkerSettings` with
  `WORKER_CONCURRENCY=C`, `ANALYSIS_CONCURRENCY=C`, the rest at its defaults (fair scheduling
  on). A's jobs are written with `JobStore.create` (the API's own enqueue step), all about
  one document; B's go through `POST /v1/documents/{id}/analyses`, one document each. Each
  job loads its document from S3, calls the fake through `AsyncAnthropic` (shared budget
  on), saves the analysis to S3 and counts usage.
- `ours-fifo`: the same with `FAIR_SCHEDULING=false` (first due, first served).
- `arq-tuned`: raw arq 0.28 tuned as in the other benchmarks (`poll_delay=0.01`) with
  `max_jobs=C`, `bench.workers.bench_claude` (one Messages call through `AsyncAnthropic`);
  `enqueue_job` from this process.
- `celery-gevent`: the Celery recipe's own task (`bench/celery_recipe.py`, sync `Anthropic`
  client) in its gevent pool at `--concurrency=C` (prefetch 1, acks late), from
  `bench/.venv-celery`; a generator in that virtualenv enqueues with `.delay()`.

Per repetition and side: B's p50 and p99 wait at each N, and the growth of the p99 from the
smallest N to the largest.

**Shared budget.** The fake allows `--budget-rpm` requests a minute (bucket of
`--budget-burst`). `--budget-jobs` analyses are written first, then TWO worker processes,
`arq jobs.worker.WorkerSettings`, start at their defaults (the limits learned from the
fake's `anthropic-ratelimit-*` headers): `ours-budget` with `CLAUDE_BUDGET=true`,
`ours-no-budget` with `false`. It waits until every job ended and reports: the calls
answered 429 (% of every call received), the attempts spent on rate limits (attempts whose
recorded error is `claude_rate_limited`, from the records' attempt histories; a hand-back
spends none), the dead letters, and the steady throughput: the calls the fake admitted
between the 10% and the 90% marks of all admitted calls (the low mark never before the call
after the opening burst), per minute, also as a share of the limit.

Every process is started by `bench.common.Children` (its own process group) and stopped by
its pid when its side ends, also on failure; Redis is flushed and the fake's log cleared
before every side. The figures go to `bench/results/fairness.json` (`Recorder`), logs to
`bench/results/fairness_logs/` (not tracked).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from arq.connections import RedisSettings, create_pool
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench.common import (
    CELERY_BIN,
    OUR_BIN,
    RESULTS,
    ROOT,
    Children,
    MachineMeter,
    Recorder,
    add_common_args,
    celery_pool_settings,
    celery_versions,
    celery_worker_command,
    exit_on_sigterm,
    log,
    our_versions,
    percentile,
    require_celery_venv,
    service_free_env,
    wait_for,
)
from bench.workers import ARQ_TUNED_POLL_S, PLAIN_CLAUDE, json_dumps
from jobs.documents import Documents
from jobs.domains import REGISTRY
from jobs.engine import keys
from jobs.engine.records import JobRecord, JobState
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.services import RedisServer, S3Server, free_port

T = TypeVar("T")

DEFAULT_OUT = RESULTS / "fairness.json"
LOG_DIR = RESULTS / "fairness_logs"
NOISY_SIDES = ("ours", "ours-fifo", "arq-tuned", "celery-gevent")
BUDGET_SIDES = ("ours-budget", "ours-no-budget")
NOISY, QUIET, BUDGET_ACCOUNT = "noisy", "quiet", "bench"
API_KEY = "bench-fairness-quiet-key"
WARMUP = "warmup"
TOKEN = re.compile(r"bench-token:([\w-]+)")
STEADY_WINDOW = (10, 90)  # percent of the admitted calls: the steady part of the budget run
RATE_LIMITED = "claude_rate_limited"
POLL_S = 0.05
STALL_S = 60.0  # a side that makes no Claude call for this long has stopped working
WARMUP_TIMEOUT_S = 120.0
TEXT = (
    "Quarterly report. Revenue grew in every region; costs rose less than revenue. "
    "The board approved the plan for next year and asked for a review of suppliers. "
) * 12  # about 2 KB, as in the I/O-bound benchmark


def document_text(token: str) -> str:
    """A document's text, with the token that names its job in the fake's request log."""
    return f"{TEXT}\nbench-token:{token}\n"


@dataclass
class Stack:
    """The services every side shares, and the processes a side starts."""

    redis: RedisServer
    s3: S3Server
    fake: FakeAnthropic
    children: Children

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def fresh(self) -> None:
        """Flush Redis (every db) and clear the fake's log, counters and limits."""
        with Redis.from_url(self.redis_url()) as client:
            client.flushall()
        self.fake.reset()


@dataclass
class CallWatch:
    """The fake's request log read as it grows: every call's time and token, and the first
    call of each token."""

    fake: FakeAnthropic
    seen: int = 0
    calls: list[tuple[float, str]] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)

    def poll(self) -> None:
        log_now = self.fake.requests
        count = len(log_now)
        for entry in log_now[self.seen : count]:
            found = TOKEN.search(json.dumps(entry["body"]))
            token = found.group(1) if found else ""
            self.calls.append((entry["at"], token))
            self.first.setdefault(token, entry["at"])
        self.seen = count


def alive(proc: subprocess.Popen, what: str, children: Children, name: str) -> None:
    """Raise, naming its log, when a process we started has exited."""
    if proc.poll() is not None:
        raise RuntimeError(
            f"{what} (pid {proc.pid}) exited with {proc.returncode}; see {children.log_path(name)}"
        )


def wait_tokens(
    watch: CallWatch, tokens: list[str], timeout_s: float, check: Callable[[], None], what: str
) -> None:
    """Wait until the fake has received a call for every token: at most `timeout_s`, and
    never longer than STALL_S without any new call (a side that stopped calling)."""
    clock = time.monotonic()
    deadline = clock + timeout_s
    moved, seen = clock, watch.seen
    while True:
        watch.poll()
        missing = [t for t in tokens if t not in watch.first]
        if not missing:
            return
        check()
        now = time.monotonic()
        if watch.seen != seen:
            moved, seen = now, watch.seen
        if now > deadline or now - moved > STALL_S:
            raise TimeoutError(
                f"{what}: {len(missing)} calls not received after {now - clock:.0f}s "
                f"(the last call {now - moved:.0f}s ago)"
            )
        time.sleep(POLL_S)


async def in_chunks(count: int, make: Callable[[int], Awaitable[T]], chunk: int = 200) -> list[T]:
    """`make(i)` for every i below `count`, `chunk` at a time."""
    found: list[T] = []
    for start in range(0, count, chunk):
        found += await asyncio.gather(*(make(i) for i in range(start, min(count, start + chunk))))
    return found


# ---------------------------------------------------------------------------- ours


def our_env(stack: Stack, **extra: str) -> dict[str, str]:
    """Our API's and worker's environment: defaults, but for the stack's services, the
    quiet account's key and `extra`."""
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return service_free_env(
        {
            "REDIS_URL": stack.redis_url(),
            "S3_ENDPOINT_URL": stack.s3.url,
            "S3_BUCKET": "bench",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANTHROPIC_BASE_URL": stack.fake.url,
            "API_KEYS": json.dumps({QUIET: [f"sha256:{digest}"]}),
            "WORKER_METRICS_PORT": "0",
            **extra,
        }
    )


def settings_of(env: dict[str, str]) -> Settings:
    """The settings our processes read from `env`, for this process's own writes (the
    scheduling bucket of a job depends on `FAIR_SCHEDULING`)."""
    names = {name.upper() for name in Settings.model_fields}
    values = {k.lower(): v for k, v in env.items() if k in names}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OurDocuments:
    """The noisy account's one document, the quiet account's (token -> id), the warm-up's."""

    noisy: str
    quiet: dict[str, str]
    warmup: str


async def prepare_documents(settings: Settings, tokens: list[str]) -> OurDocuments:
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        async with open_storage(settings) as storage:
            await storage.ensure_bucket()
            documents = Documents(redis, storage, settings.max_document_bytes)

            async def create(account: str, token: str) -> str:
                meta = await documents.create(account, "u1", None, document_text(token))
                return meta.id

            return OurDocuments(
                noisy=await create(NOISY, NOISY),
                quiet={token: await create(QUIET, token) for token in tokens},
                warmup=await create(QUIET, WARMUP),
            )
    finally:
        await redis.aclose()


async def enqueue_backlog(settings: Settings, account: str, document_id: str, count: int) -> None:
    """`count` analyses of one document, written as the API writes them."""
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        store = JobStore(redis, settings, REGISTRY)
        args = {"document_id": document_id, "instructions": None}
        await in_chunks(count, lambda _i: store.create(kind="analysis", account=account, args=args))
    finally:
        await redis.aclose()


def post_analysis(http: httpx.Client, document_id: str) -> None:
    answer = http.post(
        f"/v1/documents/{document_id}/analyses",
        json={},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    if answer.status_code != 202:
        raise RuntimeError(f"POST analyses answered {answer.status_code}: {answer.text[:500]}")


def api_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Load:
    """What a side's load did: when each quiet job was sent, and how long the noisy
    account's backlog took to enqueue."""

    sent: dict[str, float]
    noisy_enqueue_s: float


def run_ours(
    stack: Stack, side: str, backlog: int, plan: list[tuple[str, float]], args: Any, name: str
) -> tuple[Load, Callable[[], None]]:
    """Start our API and worker, warm up, then load: the backlog, then the quiet POSTs."""
    fair = "false" if side == "ours-fifo" else "true"
    concurrency = str(args.concurrency)
    env = our_env(
        stack,
        WORKER_CONCURRENCY=concurrency,
        ANALYSIS_CONCURRENCY=concurrency,
        FAIR_SCHEDULING=fair,
    )
    settings = settings_of(env)
    stack.s3.reset()
    docs = asyncio.run(prepare_documents(settings, [token for token, _ in plan]))
    port = free_port()
    api = stack.children.start(
        [str(OUR_BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log"],
        env, f"{name}-api",
    )  # fmt: skip
    worker = stack.children.start(
        [str(OUR_BIN / "arq"), "jobs.worker.WorkerSettings"], env, f"{name}-worker"
    )

    def check() -> None:
        alive(api, "our API", stack.children, f"{name}-api")
        alive(worker, "our worker", stack.children, f"{name}-worker")

    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: check() or api_answers(url), 60, "our API", 0.2)
    with httpx.Client(base_url=url, timeout=30) as http:
        post_analysis(http, docs.warmup)
        warm_up(stack, check, name)
        clock = time.monotonic()
        asyncio.run(enqueue_backlog(settings, NOISY, docs.noisy, backlog))
        noisy_s = time.monotonic() - clock
        sent: dict[str, float] = {}
        start = time.monotonic()
        for token, offset in plan:
            time.sleep(max(0.0, start + offset - time.monotonic()))
            sent[token] = time.time()
            post_analysis(http, docs.quiet[token])
    return Load(sent, noisy_s), check


def warm_up(stack: Stack, check: Callable[[], None], name: str) -> None:
    """Wait for the warm-up job's call, let it end, then clear the fake's log."""
    wait_tokens(CallWatch(stack.fake), [WARMUP], WARMUP_TIMEOUT_S, check, f"{name} warm-up")
    time.sleep(stack.fake.delay_s + 0.5)
    stack.fake.reset()


# ------------------------------------------------------------------------ raw arq


def run_arq(
    stack: Stack, backlog: int, plan: list[tuple[str, float]], args: Any, name: str
) -> tuple[Load, Callable[[], None]]:
    """Start a tuned arq worker at our concurrency, warm up, then load with `enqueue_job`."""
    env = service_free_env(
        {
            "REDIS_URL": stack.redis_url(),
            "BENCH_ARQ_MAX_JOBS": str(args.concurrency),
            "ANTHROPIC_BASE_URL": stack.fake.url,
            "ANTHROPIC_API_KEY": "sk-bench",
        }
    )
    worker = stack.children.start(
        [str(OUR_BIN / "arq"), "bench.workers.ClaudeArqWorkerSettings"], env, name
    )

    def check() -> None:
        alive(worker, "the arq worker", stack.children, name)

    async def enqueue(texts: list[str]) -> None:
        pool = await create_pool(
            RedisSettings.from_dsn(stack.redis_url()), job_serializer=json_dumps
        )
        try:
            await in_chunks(len(texts), lambda i: pool.enqueue_job(PLAIN_CLAUDE, texts[i]))
        finally:
            await pool.aclose()

    async def load() -> Load:
        pool = await create_pool(
            RedisSettings.from_dsn(stack.redis_url()), job_serializer=json_dumps
        )
        try:
            clock = time.monotonic()
            text = document_text(NOISY)
            await in_chunks(backlog, lambda _i: pool.enqueue_job(PLAIN_CLAUDE, text))
            noisy_s = time.monotonic() - clock
            sent: dict[str, float] = {}
            start = time.monotonic()
            for token, offset in plan:
                await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
                sent[token] = time.time()
                await pool.enqueue_job(PLAIN_CLAUDE, document_text(token))
            return Load(sent, noisy_s)
        finally:
            await pool.aclose()

    asyncio.run(enqueue([document_text(WARMUP)]))
    warm_up(stack, check, name)
    return asyncio.run(load()), check


# -------------------------------------------------------------------------- celery


def celery_env(stack: Stack) -> dict[str, str]:
    defaults = Settings.model_fields
    return service_free_env(
        {
            "CELERY_BROKER_URL": stack.redis_url(0),
            "CELERY_RESULT_BACKEND": stack.redis_url(1),
            "ANTHROPIC_BASE_URL": stack.fake.url,
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANALYSIS_MODEL": str(defaults["analysis_model"].default),
            "ANALYSIS_MAX_TOKENS": str(defaults["analysis_max_tokens"].default),
        }
    )


def celery_plan(path: Path, backlog: int, quiet: list[tuple[str, float]]) -> list[str]:
    """Write the generator's plan; returns its command line."""
    plan = {
        "noisy": {"count": backlog, "text": document_text(NOISY)},
        "quiet": [
            {"token": token, "text": document_text(token), "offset_s": offset}
            for token, offset in quiet
        ],
    }
    path.write_text(json.dumps(plan))
    return [str(CELERY_BIN / "python"), "-m", "bench.celery_recipe", "--plan", str(path)]


def run_celery(
    stack: Stack, backlog: int, plan: list[tuple[str, float]], args: Any, name: str
) -> tuple[Load, Callable[[], None]]:
    """Start the recipe's worker in its gevent pool at our concurrency, warm up, then load
    with a generator in the Celery virtualenv (`.delay()`)."""
    env = celery_env(stack)
    worker = stack.children.start(
        celery_worker_command("gevent", args.concurrency), env, f"{name}-worker"
    )

    def check() -> None:
        alive(worker, "the Celery worker", stack.children, f"{name}-worker")

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    warm = celery_plan(LOG_DIR / f"{name}-warmup.json", 0, [(WARMUP, 0.0)])
    answer = subprocess.run(
        warm, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if answer.returncode != 0:
        raise RuntimeError(f"the Celery generator failed: {answer.stderr[-2000:]}")
    warm_up(stack, check, name)
    command = celery_plan(LOG_DIR / f"{name}-plan.json", backlog, plan)
    generator = stack.children.start(command, env, f"{name}-generator")
    limit_s = 120.0 + backlog / 20 + args.quiet_over
    try:
        generator.wait(limit_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{name}: the Celery generator ran over {limit_s:g}s") from None
    output = stack.children.log_path(f"{name}-generator").read_text()
    if generator.returncode != 0:
        raise RuntimeError(f"{name}: the Celery generator failed: {output[-2000:]}")
    # The generator's last line on stdout is its summary (its log has stderr too).
    summary = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    sent = {token: float(at) for token, at in summary["quiet_sent"]}
    return Load(sent, float(summary["noisy_enqueue_s"])), check


# -------------------------------------------------------------------- noisy runs


def quiet_plan(args: Any) -> list[tuple[str, float]]:
    """The quiet account's jobs: (token, seconds after the backlog was enqueued)."""
    return [(f"q{i}", i * args.quiet_over / args.quiet_jobs) for i in range(args.quiet_jobs)]


def run_noisy(stack: Stack, side: str, backlog: int, args: Any, rep: int) -> dict[str, Any]:
    """One side at one backlog: the quiet account's waits."""
    name = f"{side}-b{backlog}-{rep}"
    stack.fresh()
    plan = quiet_plan(args)
    meter = MachineMeter().start()
    try:
        if side in ("ours", "ours-fifo"):
            load, check = run_ours(stack, side, backlog, plan, args, name)
        elif side == "arq-tuned":
            load, check = run_arq(stack, backlog, plan, args, name)
        else:
            load, check = run_celery(stack, backlog, plan, args, name)
        watch = CallWatch(stack.fake)
        # Ten times what a FIFO side would need at full concurrency (a slow peer gets its
        # time), bounded again by STALL_S without any call.
        timeout_s = 120.0 + 10 * backlog * args.delay / args.concurrency + args.quiet_over
        wait_tokens(watch, [t for t, _ in plan], timeout_s, check, name)
        max_in_flight = stack.fake.max_in_flight
        machine_use = meter.read()
    finally:
        stack.children.stop_all()
    waits = [watch.first[token] - load.sent[token] for token, _ in plan]
    last_quiet = max(watch.first[token] for token, _ in plan)
    noisy_calls = [at for at, token in watch.calls if token == NOISY]
    result = {
        "part": "noisy",
        "side": side,
        "backlog": backlog,
        "rep": rep,
        "quiet_jobs": len(plan),
        "wait_s": {
            "p50": percentile(waits, 50),
            "p99": percentile(waits, 99),
            "max": max(waits),
            "min": min(waits),
        },
        "waits_s": [round(w, 4) for w in waits],
        "noisy_enqueue_s": round(load.noisy_enqueue_s, 3),
        "noisy_calls_before_last_quiet": sum(1 for at in noisy_calls if at <= last_quiet),
        "noisy_calls_received": len(noisy_calls),
        "claude_max_in_flight": max_in_flight,
        "machine": machine_use,
    }
    wait = result["wait_s"]
    log(
        f"{name}: quiet wait p50 {wait['p50']:.2f}s p99 {wait['p99']:.2f}s; noisy calls before "
        f"the last quiet one {result['noisy_calls_before_last_quiet']}/{backlog}; max in flight "
        f"{max_in_flight}"
    )
    return result


# ------------------------------------------------------------------- budget runs


async def prepare_budget(settings: Settings, jobs: int) -> list[str]:
    """The bucket, one document and `jobs` analyses of it, queued."""
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        async with open_storage(settings) as storage:
            await storage.ensure_bucket()
            documents = Documents(redis, storage, settings.max_document_bytes)
            meta = await documents.create(BUDGET_ACCOUNT, "u1", None, document_text("budget"))
        store = JobStore(redis, settings, REGISTRY)
        args = {"document_id": meta.id, "instructions": None}
        created = await in_chunks(
            jobs, lambda _i: store.create(kind="analysis", account=BUDGET_ACCOUNT, args=args)
        )
        return [enqueued.job_id for enqueued in created]
    finally:
        await redis.aclose()


async def read_records(settings: Settings, job_ids: list[str]) -> tuple[list[JobRecord], int]:
    """Every job's record, and the dead letters."""
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        records = await JobStore(redis, settings, REGISTRY).get_many(job_ids)
        return records, int(await redis.zcard(keys.DLQ))
    finally:
        await redis.aclose()


def steady_window(admitted: int, burst: int) -> tuple[int, int]:
    """The steady part of `admitted` calls, as (first, last) call counted (1-based): from
    the STEADY_WINDOW's low mark, but never before the call after the opening burst, to its
    high mark."""
    low, high = (max(1, admitted * p // 100) for p in STEADY_WINDOW)
    return min(max(low, burst + 1), high - 1), high


def steady_rate(admitted: list[float], burst: int) -> tuple[float, float, float]:
    """Calls a minute over the steady part of the admitted calls (`steady_window`), and
    its two ends' times (epoch seconds)."""
    times = sorted(admitted)
    low, high = steady_window(len(times), burst)
    t_low, t_high = times[low - 1], times[high - 1]
    return 60 * (high - low) / max(1e-6, t_high - t_low), t_low, t_high


def run_budget(stack: Stack, side: str, args: Any, rep: int) -> dict[str, Any]:
    """`--budget-jobs` analyses through two workers against the fake's rate limit."""
    name = f"{side}-{rep}"
    stack.fresh()
    stack.s3.reset()
    env = our_env(stack, CLAUDE_BUDGET="true" if side == "ours-budget" else "false")
    settings = settings_of(env)
    job_ids = asyncio.run(prepare_budget(settings, args.budget_jobs))
    stack.fake.limit(requests_per_minute=args.budget_rpm, burst_requests=args.budget_burst)
    timeout_s = 120.0 + 3 * args.budget_jobs * 60 / args.budget_rpm
    meter = MachineMeter().start()
    try:
        workers = [
            stack.children.start(
                [str(OUR_BIN / "arq"), "jobs.worker.WorkerSettings"], env, f"{name}-worker{i}"
            )
            for i in range(args.budget_workers)
        ]
        spawned = time.time()
        log(f"{name}: {args.budget_workers} workers started; waiting up to {timeout_s:.0f}s")
        deadline = time.monotonic() + timeout_s
        with Redis.from_url(stack.redis_url()) as client:
            while (unfinished := int(client.zcard(keys.ACTIVE))) > 0:
                for i, worker in enumerate(workers):
                    alive(worker, "our worker", stack.children, f"{name}-worker{i}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: {unfinished} jobs unfinished after {timeout_s}s")
                time.sleep(0.2)
        machine_use = meter.read()
    finally:
        stack.children.stop_all()
    records, dead_letters = asyncio.run(read_records(settings, job_ids))
    fake = stack.fake
    calls, limited, admitted = len(fake.requests), fake.answered_429, list(fake.admitted_at)
    outcomes = Counter(a["outcome"] for r in records for a in r.attempts)
    spent = sum(
        1
        for r in records
        for a in r.attempts
        if a["outcome"] != "handed_back" and (a.get("error") or {}).get("type") == RATE_LIMITED
    )
    enough = len(admitted) >= 3
    rate, t_low, t_high = steady_rate(admitted, args.budget_burst) if enough else (0.0, 0.0, 0.0)
    finished = [r.finished_at for r in records if r.finished_at]
    result = {
        "part": "budget",
        "side": side,
        "rep": rep,
        "jobs": args.budget_jobs,
        "states": dict(Counter(r.state.value for r in records)),
        "calls": calls,
        "answered_429": limited,
        "percent_429": 100 * limited / calls if calls else 0.0,
        "admitted": len(admitted),
        "attempt_outcomes": dict(outcomes),
        "rate_limit_attempts": spent,
        "dead_letters": dead_letters,
        "steady_calls_per_min": rate,
        "steady_window_calls": list(steady_window(len(admitted), args.budget_burst)),
        "steady_window_s": [round(t_low - spawned, 3), round(t_high - spawned, 3)],
        "limit_share": rate / args.budget_rpm,
        "wall_s": max(finished) / 1000 - spawned if finished else None,
        "succeeded": sum(1 for r in records if r.state == JobState.SUCCEEDED),
        "machine": machine_use,
    }
    log(
        f"{name}: {limited}/{calls} calls answered 429, {spent} attempts spent on rate limits, "
        f"{dead_letters} dead letters, steady {rate:.1f} calls/min, states {result['states']}"
    )
    return result


# ------------------------------------------------------------------------ figures


def noisy_settings(side: str, concurrency: int) -> str:
    """A noisy-neighbour side's settings, as the report shows them."""
    return {
        "ours": f"WORKER_CONCURRENCY={concurrency}, ANALYSIS_CONCURRENCY={concurrency}, "
        "FAIR_SCHEDULING=true (its default), rest default; B: POST /v1/documents/{id}/analyses",
        "ours-fifo": f"WORKER_CONCURRENCY={concurrency}, ANALYSIS_CONCURRENCY={concurrency}, "
        "FAIR_SCHEDULING=false, rest default; B: POST /v1/documents/{id}/analyses",
        "arq-tuned": f"max_jobs={concurrency}, poll_delay={ARQ_TUNED_POLL_S}; enqueue_job",
        "celery-gevent": f"the recipe's task, {celery_pool_settings('gevent', concurrency)}; "
        ".delay()",
    }[side]


def budget_settings(side: str, workers: int) -> str:
    """A budget side's settings, as the report shows them."""
    on = "true (its default)" if side == "ours-budget" else "false"
    defaults = Settings.model_fields
    return (
        f"{workers} worker processes, CLAUDE_BUDGET={on}, WORKER_CONCURRENCY="
        f"{defaults['worker_concurrency'].default}, ANALYSIS_CONCURRENCY="
        f"{defaults['analysis_concurrency'].default} (defaults); limits learned from the "
        "answers' headers"
    )


def declare(recorder: Recorder, noisy: list[str], budget: list[str], backlogs: list[int]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for side in noisy:
        for n in backlogs:
            what = f"{side}, backlog {n}: quiet wait"
            recorder.figure(f"{side}.b{n}.p50_wait_s", f"{what} p50", "s", "lower", digits=2)
            recorder.figure(f"{side}.b{n}.p99_wait_s", f"{what} p99", "s", "lower", digits=2)
            recorder.figure(
                f"{side}.b{n}.claude_max_in_flight",
                f"{side}, backlog {n}: Claude calls in flight, max", "calls", None, digits=0,
            )  # fmt: skip
        if len(backlogs) > 1:
            recorder.figure(
                f"{side}.p99_growth_s",
                f"{side}: p99 wait at backlog {max(backlogs)} minus at {min(backlogs)}",
                "s", "lower", digits=2,
            )  # fmt: skip
    for side in budget:
        recorder.figure(
            f"{side}.percent_429", f"{side}: calls answered 429", "% of calls", "lower", digits=2
        )
        recorder.figure(f"{side}.answered_429", f"{side}: calls answered 429", "calls", "lower",
                        digits=0)  # fmt: skip
        recorder.figure(f"{side}.calls", f"{side}: Claude calls received", "calls", None, digits=0)
        recorder.figure(
            f"{side}.rate_limit_attempts", f"{side}: attempts spent on rate limits", "attempts",
            "lower", digits=0,
        )  # fmt: skip
        recorder.figure(f"{side}.dead_letters", f"{side}: dead letters", "jobs", "lower", digits=0)
        recorder.figure(
            f"{side}.steady_calls_per_min", f"{side}: calls admitted a minute, steady part",
            "calls/min", "higher", digits=1,
        )  # fmt: skip
        recorder.figure(
            f"{side}.limit_share", f"{side}: steady calls a minute over the limit", "x",
            "higher", digits=2,
        )  # fmt: skip
        recorder.figure(f"{side}.wall_s", f"{side}: wall, start-up included", "s", "lower")


def record_noisy(recorder: Recorder, result: dict[str, Any]) -> None:
    prefix = f"{result['side']}.b{result['backlog']}"
    recorder.add(f"{prefix}.p50_wait_s", result["wait_s"]["p50"])
    recorder.add(f"{prefix}.p99_wait_s", result["wait_s"]["p99"])
    recorder.add(f"{prefix}.claude_max_in_flight", result["claude_max_in_flight"])


def record_growth(recorder: Recorder, runs: list[dict[str, Any]], backlogs: list[int]) -> None:
    """Each side's p99 at the largest backlog minus at the smallest, in this repetition."""
    if len(backlogs) < 2:
        return
    p99 = {(r["side"], r["backlog"]): r["wait_s"]["p99"] for r in runs}
    for side in dict.fromkeys(side for side, _ in p99):
        if (side, max(backlogs)) in p99 and (side, min(backlogs)) in p99:
            growth = p99[(side, max(backlogs))] - p99[(side, min(backlogs))]
            recorder.add(f"{side}.p99_growth_s", growth)


def record_budget(recorder: Recorder, result: dict[str, Any]) -> None:
    side = result["side"]
    recorder.add(f"{side}.percent_429", result["percent_429"])
    recorder.add(f"{side}.answered_429", result["answered_429"])
    recorder.add(f"{side}.calls", result["calls"])
    recorder.add(f"{side}.rate_limit_attempts", result["rate_limit_attempts"])
    recorder.add(f"{side}.dead_letters", result["dead_letters"])
    recorder.add(f"{side}.steady_calls_per_min", result["steady_calls_per_min"])
    recorder.add(f"{side}.limit_share", result["limit_share"])
    if result["wall_s"] is not None:
        recorder.add(f"{side}.wall_s", result["wall_s"])


def table(runs: list[dict[str, Any]]) -> str:
    """The repetitions, one line each, for the terminal."""
    lines = []
    for r in runs:
        if r["part"] == "noisy":
            w = r["wait_s"]
            lines.append(
                f"{r['side']:15} backlog {r['backlog']:5} rep {r['rep']}: quiet wait p50 "
                f"{w['p50']:.2f}s p99 {w['p99']:.2f}s max {w['max']:.2f}s"
            )
        else:
            lines.append(
                f"{r['side']:15} rep {r['rep']}: {r['percent_429']:.2f}% answered 429, "
                f"{r['rate_limit_attempts']} attempts on rate limits, {r['dead_letters']} dead "
                f"letters, {r['steady_calls_per_min']:.1f} calls/min steady"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlogs", nargs="+", type=int, default=[200, 2000])
    parser.add_argument("--quiet-jobs", type=int, default=20)
    parser.add_argument("--quiet-over", type=float, default=10.0, help="seconds")
    parser.add_argument("--delay", type=float, default=1.0, help="the fake's answer time (s)")
    parser.add_argument("--concurrency", type=int, default=50, help="Claude calls at once")
    parser.add_argument("--budget-jobs", type=int, default=300)
    parser.add_argument("--budget-rpm", type=int, default=120)
    parser.add_argument("--budget-burst", type=int, default=10)
    parser.add_argument("--budget-workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=(*NOISY_SIDES, *BUDGET_SIDES))
    parser.add_argument("--reps", type=int, default=3)
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    backlogs = sorted(set(args.backlogs))
    noisy = [s for s in NOISY_SIDES if not args.only or s in args.only]
    budget = [s for s in BUDGET_SIDES if not args.only or s in args.only]
    require_celery_venv(["celery"] if "celery-gevent" in noisy else [])
    sides = {side: noisy_settings(side, args.concurrency) for side in noisy}
    sides |= {side: budget_settings(side, args.budget_workers) for side in budget}
    recorder = Recorder(
        "fairness",
        args.out,
        quick=args.quick,
        settings={
            "reps": args.reps,
            "claude_delay_s": args.delay,
            "backlogs": backlogs,
            "quiet_jobs": args.quiet_jobs,
            "quiet_over_s": args.quiet_over,
            "concurrency": args.concurrency,
            "budget": {
                "jobs": args.budget_jobs,
                "requests_per_minute": args.budget_rpm,
                "burst_requests": args.budget_burst,
                "workers": args.budget_workers,
                "steady_window_percent": list(STEADY_WINDOW),
            },
            "sides": sides,
        },
        versions={
            "ours": our_versions(),
            "celery": celery_versions() if "celery-gevent" in noisy else None,
        },
    )
    declare(recorder, noisy, budget, backlogs)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    redis_server, s3_server = RedisServer(), S3Server()
    fake = FakeAnthropic(delay_s=args.delay)
    stack = Stack(redis_server, s3_server, fake, Children(LOG_DIR))
    try:
        redis_server.start()
        s3_server.start()
        fake.start()
        log(f"redis {redis_server.url}, S3 {s3_server.url}, fake Claude {fake.url}")
        for rep in range(1, args.reps + 1):
            this_rep: list[dict[str, Any]] = []
            for backlog in backlogs:
                for side in noisy:
                    result = run_noisy(stack, side, backlog, args, rep)
                    this_rep.append(result)
                    record_noisy(recorder, result)
                    recorder.run(result)
            record_growth(recorder, this_rep, backlogs)
            for side in budget:
                result = run_budget(stack, side, args, rep)
                this_rep.append(result)
                record_budget(recorder, result)
                recorder.run(result)
            runs += this_rep
    finally:
        stack.children.stop_all()
        fake.stop()
        s3_server.stop()
        redis_server.stop()
    recorder.finish()
    print(
        f"\nquiet account: {args.quiet_jobs} analyses over {args.quiet_over:g}s beside a noisy "
        f"backlog; Claude answering in {args.delay:g}s; {args.concurrency} calls at once\n"
    )
    print(table(runs))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
