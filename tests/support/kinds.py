"""Job kinds that tests register on a test worker, to drive the job layer through its paths."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jobs.errors import InvalidInput, TransientError
from jobs.runner import JobKind, JobRun
from jobs.worker import DOMAIN_KINDS

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


async def sleepy(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Reports progress, then sleeps `seconds`; writes its pid so a test can kill its worker."""
    await run.deps.redis.rpush(f"test:started:{run.job_id}", f"{os.getpid()}:{run.attempt}")
    await run.progress(0.5, "sleeping")
    await asyncio.sleep(args.get("seconds", 1))
    return {"slept": args.get("seconds", 1)}


async def crash_bug(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """An unexpected exception: a bug, not a classified failure."""
    raise KeyError("missing")


TEST_KINDS: tuple[JobKind, ...] = (
    JobKind("test.flaky", flaky),
    JobKind("test.broken", broken_until_fixed),
    JobKind("test.sleepy", sleepy),
    JobKind("test.bug", crash_bug),
    *DOMAIN_KINDS,
)
