"""Worker settings for the benchmarks, started as `arq bench.workers.<Name>` subprocesses.

- `OurWorkerSettings`: this service's worker (`jobs.worker.settings_class`) with the
  benchmark kinds `bench.sleep` and `bench.noop` besides the service's own; its settings are
  read from the environment when arq starts it.
- `PlainArqWorkerSettings`: arq 0.28 at its defaults (JSON instead of pickle, the queue
  from `QUEUE_NAME`), with `bench_sleep`, `bench_noop` and `bench_mark`.
- `TunedArqWorkerSettings`: the same, tuned for throughput and latency: `max_jobs=100`,
  `poll_delay=ARQ_TUNED_POLL_S`.
- `ClaudeArqWorkerSettings`: tuned arq (`poll_delay=ARQ_TUNED_POLL_S`) with `max_jobs` from
  `BENCH_ARQ_MAX_JOBS` (default 100) and `bench_claude`, which asks the Messages API about a
  text through one `AsyncAnthropic` client per worker (`ANTHROPIC_BASE_URL`,
  `ANTHROPIC_API_KEY`, `ANALYSIS_MODEL`, `ANALYSIS_MAX_TOKENS`; the SDK's retries off).
- `MarkedWorkerSettings`: this service's production worker (`jobs.domains.REGISTRY`,
  settings from the environment) whose `export` handler first pushes the wall-clock time
  it started on `bench:marks`, then runs the real export: the latency benchmark stamps our
  jobs where the peers stamp theirs, inside the job at the handler's start.

`bench.sleep`/`bench_sleep` record every start of a job as `{"pid", "at"}` (wall clock) on
the Redis list `bench:started:<job id>`, then sleep, so the benchmark sees which process ran
it and when. `bench.noop`/`bench_noop` (the trivial job of the drain-rate benchmark) only
`INCR bench:done`; `bench_mark` pushes the wall-clock time it started on `bench:marks`.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from typing import Any

from anthropic import AsyncAnthropic
from arq.connections import RedisSettings
from arq.constants import default_queue_name

from jobs.domains import REGISTRY
from jobs.engine import JobKind, JobRun
from jobs.engine.arq_adapter import use_longrun_worker
from jobs.engine.registry import Handler
from jobs.settings import Settings, load_settings
from jobs.worker import settings_class

OUR_KIND = "bench.sleep"
OUR_NOOP_KIND = "bench.noop"
PLAIN_FUNCTION = "bench_sleep"
PLAIN_NOOP = "bench_noop"
PLAIN_MARK = "bench_mark"
PLAIN_CLAUDE = "bench_claude"
STARTED_PREFIX = "bench:started:"
DONE_KEY = "bench:done"
MARKS_KEY = "bench:marks"
# "Tuned" arq: as many jobs at once as our side gets, and a short poll.
ARQ_TUNED_MAX_JOBS = 100
ARQ_TUNED_POLL_S = 0.01


def started_key(job_id: str) -> str:
    """The Redis list where each start of a job is recorded."""
    return f"{STARTED_PREFIX}{job_id}"


def start_mark() -> str:
    """One start of a job: which process, and when (epoch seconds)."""
    return json.dumps({"pid": os.getpid(), "at": time.time()})


def json_dumps(value: Any) -> bytes:
    """The plain-arq side's job serializer (the same as the API's enqueuer uses)."""
    return json.dumps(value).encode()


def json_loads(raw: bytes) -> Any:
    """The plain-arq side's job deserializer."""
    return json.loads(raw)


async def our_sleep(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Handler of `bench.sleep` on our worker: mark the start, then sleep `seconds`."""
    await run.deps.redis.rpush(started_key(run.job_id), start_mark())
    await asyncio.sleep(float(args.get("seconds", 1)))
    return {"slept": args.get("seconds", 1)}


async def bench_sleep(ctx: dict[str, Any], seconds: float) -> None:
    """The plain-arq function: mark the start, then sleep `seconds`."""
    await ctx["redis"].rpush(started_key(ctx["job_id"]), start_mark())
    await asyncio.sleep(seconds)


async def our_noop(run: JobRun, args: dict[str, Any]) -> None:
    """Handler of `bench.noop`: the trivial job, one INCR."""
    await run.deps.redis.incr(DONE_KEY)


async def bench_noop(ctx: dict[str, Any]) -> None:
    """The plain-arq trivial job: one INCR."""
    await ctx["redis"].incr(DONE_KEY)


async def bench_mark(ctx: dict[str, Any]) -> None:
    """The plain-arq latency probe: push the wall-clock time it started."""
    await ctx["redis"].rpush(MARKS_KEY, repr(time.time()))


async def start_claude(ctx: dict[str, Any]) -> None:
    """`on_startup` of the plain-arq Claude worker: one client for the process, with the
    SDK's retries off (as ours: a failed call is the job's failure, nothing hidden)."""
    ctx["anthropic"] = AsyncAnthropic(
        base_url=os.environ.get("ANTHROPIC_BASE_URL"),
        api_key=os.environ.get("ANTHROPIC_API_KEY"),
        max_retries=0,
    )


async def stop_claude(ctx: dict[str, Any]) -> None:
    """`on_shutdown` of the plain-arq Claude worker: close its client."""
    client = ctx.get("anthropic")
    if client is not None:
        await client.close()


async def bench_claude(ctx: dict[str, Any], text: str) -> str:
    """The plain-arq analysis: one Messages API call about `text` (the Celery recipe's
    prompt), through the worker's client; returns the answer's text."""
    defaults = Settings.model_fields
    message = await ctx["anthropic"].messages.create(
        model=os.environ.get("ANALYSIS_MODEL", defaults["analysis_model"].default),
        max_tokens=int(
            os.environ.get("ANALYSIS_MAX_TOKENS", defaults["analysis_max_tokens"].default)
        ),
        messages=[{"role": "user", "content": f"Analyze this: {text}"}],
    )
    return "".join(block.text for block in message.content if block.type == "text")


BENCH_KINDS: tuple[JobKind, ...] = (
    JobKind(OUR_KIND, our_sleep),
    JobKind(OUR_NOOP_KIND, our_noop),
)
# The service's kinds and the benchmark's: what our benchmark workers and stores run with.
BENCH_REGISTRY = REGISTRY.with_kinds(BENCH_KINDS)


def marked(handler: Handler) -> Handler:
    """`handler`, first pushing the wall-clock time it started on `bench:marks` (as the
    peers' `bench_mark`/`mark` jobs do)."""

    async def run_marked(run: JobRun, args: dict[str, Any]) -> Any:
        await run.deps.redis.rpush(MARKS_KEY, repr(time.time()))
        return await handler(run, args)

    return run_marked


def marked_settings_class() -> type:
    """The production worker, with the export handler marking its start."""
    export = REGISTRY["export"]
    registry = REGISTRY.replacing(replace(export, handler=marked(export.handler)))
    use_longrun_worker()
    return settings_class(load_settings(_env_file=None), registry)


def our_settings_class() -> type:
    """Our worker, with the settings in the environment (or their defaults)."""
    use_longrun_worker()
    # `_env_file=None`: only the environment the benchmark gives counts, never a stray `.env`.
    return settings_class(load_settings(_env_file=None), BENCH_REGISTRY)


def plain_arq_settings_class(**tuning: Any) -> type:
    """arq's defaults, except JSON for jobs and any `tuning`; the queue comes from
    `QUEUE_NAME`."""

    # A flat class, as arq reads it (`__dict__`, so no inherited attributes and no
    # staticmethod wrappers): everything not named here is arq's default.
    options: dict[str, Any] = {
        "functions": [bench_sleep, bench_noop, bench_mark],
        "redis_settings": RedisSettings.from_dsn(os.environ["REDIS_URL"]),
        "queue_name": os.environ.get("QUEUE_NAME", default_queue_name),
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        **tuning,
    }
    return type("PlainArqWorkerSettings", (), options)


def __getattr__(name: str) -> Any:
    # `arq bench.workers.<Name>` builds the settings here, from the environment at start.
    if name == "OurWorkerSettings":
        return our_settings_class()
    if name == "PlainArqWorkerSettings":
        return plain_arq_settings_class()
    if name == "MarkedWorkerSettings":
        return marked_settings_class()
    if name == "TunedArqWorkerSettings":
        return plain_arq_settings_class(max_jobs=ARQ_TUNED_MAX_JOBS, poll_delay=ARQ_TUNED_POLL_S)
    if name == "ClaudeArqWorkerSettings":
        return plain_arq_settings_class(
            functions=[bench_claude],
            max_jobs=int(os.environ.get("BENCH_ARQ_MAX_JOBS", ARQ_TUNED_MAX_JOBS)),
            poll_delay=ARQ_TUNED_POLL_S,
            on_startup=start_claude,
            on_shutdown=stop_claude,
        )
    raise AttributeError(name)
