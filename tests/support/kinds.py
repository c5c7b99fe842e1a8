"""Job kinds that tests register on a test worker, to drive the job layer through its paths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from jobs.domains import REGISTRY
from jobs.engine import JobKind, JobRun
from jobs.errors import InvalidInput, TransientError

BROKEN_FLAG = "test:broken"


async def flaky(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Fails transiently on its first `fail_times` attempts, then succeeds."""
    if run.attempt <= args.get("fail_times", 0):
        raise TransientError(
            f"flaky failure on attempt {run.attempt}",
            type="flaky",
            retry_after=args.get("retry_after"),
        )
    return {"ok": True, "attempt": run.attempt}


async def broken_until_fixed(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Fails permanently while the Redis flag `test:broken` is set (a bug not yet fixed)."""
    if await run.deps.redis.exists(BROKEN_FLAG):
        raise InvalidInput("the input cannot be processed", type="bad_document")
    return {"fixed": True}


def _mark(run: JobRun, **fields: Any) -> str:
    return json.dumps({"pid": os.getpid(), "attempt": run.attempt, "at": time.time(), **fields})


async def sleepy(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Sleeps `seconds` after reporting progress; logs its start, end and cleanup in Redis
    (`test:started|finished|cleanup:<id>`) so tests can see which worker ran it and when."""
    redis = run.deps.redis
    await redis.rpush(f"test:started:{run.job_id}", _mark(run))
    await run.progress(0.5, "sleeping")
    try:
        await asyncio.sleep(args.get("seconds", 1))
    except asyncio.CancelledError:
        await redis.rpush(f"test:cleanup:{run.job_id}", _mark(run, soft=run.soft_limit.is_set()))
        raise
    await redis.rpush(f"test:finished:{run.job_id}", _mark(run))
    return {"slept": args.get("seconds", 1)}


async def suicide(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Kills its own worker process, as a poison-pill job would (a segfault, an OOM kill)."""
    await run.deps.redis.rpush(f"test:started:{run.job_id}", _mark(run))
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


async def crash_bug(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """An unexpected exception: a bug, not a classified failure."""
    raise KeyError("missing")


# What an unexpected exception may carry: addresses, users, secrets. None of it is the
# tenant's to read.
LEAKED = "10.0.0.7:5432 user=svc password=hunter2"


async def leaky_bug(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Raises an exception whose message holds internals: a bug, or a network failure."""
    if args.get("network"):
        raise ConnectionRefusedError(111, f"Connect call failed to {LEAKED}")
    raise RuntimeError(f"could not reach {LEAKED}")


async def unstorable(run: JobRun, args: dict[str, Any]) -> Any:
    """Returns a result that is not JSON (a bug in a handler)."""
    return {"when": time}


async def redis_blip(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Loses its Redis connection on its first run (a failover, a restart), then succeeds."""
    if await run.deps.redis.set(f"test:blip:{run.job_id}", 1, nx=True):
        raise RedisConnectionError("Connection reset by peer")
    return {"attempt": run.attempt}


TEST_KINDS: tuple[JobKind, ...] = (
    JobKind("test.flaky", flaky),
    JobKind("test.broken", broken_until_fixed),
    JobKind("test.sleepy", sleepy),
    JobKind("test.bug", crash_bug),
    JobKind("test.leaky", leaky_bug),
    JobKind("test.suicide", suicide),
    JobKind("test.unstorable", unstorable),
    JobKind("test.redis_blip", redis_blip),
)
# The service's domains and the test kinds: what test workers and stores run with.
TEST_REGISTRY = REGISTRY.with_kinds(TEST_KINDS)
