"""Keep arq's worker alive when Redis goes away in the middle of claiming a job.

arq claims a job with WATCH on its in-progress key, then MULTI/EXEC
(`Worker.start_jobs`). redis-py cannot retry a command while a key is watched, so a
Redis restart at that moment raises `WatchError` ("A ConnectionError occurred while
watching") or `ConnectionError` out of `start_jobs`, out of arq's poll loop, and the
worker process exits. `install()` wraps `start_jobs`: such an error ends this poll
iteration instead (the job stays in the queue and is claimed at a later poll), after
undoing the slot arq had taken for the job it was claiming.

arq has no hook for this and the arq CLI builds `arq.worker.Worker` itself, so the
wrapper is installed on the class, like `jobs/wakeup.py` does for arq's poll loop.
Checked against arq 0.28.0; tests/test_durability.py fails if the shape changes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import arq.worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

log = logging.getLogger("jobs.claims")

StartJobs = Callable[[Any, list[bytes]], Awaitable[None]]
_original: StartJobs = arq.worker.Worker.start_jobs


async def start_jobs_surviving_redis_loss(self: Any, job_ids: list[bytes]) -> None:
    """arq's `start_jobs`; a Redis failure during a claim ends this poll, not the worker."""
    try:
        await _original(self, job_ids)
    except (WatchError, RedisConnectionError, RedisTimeoutError) as exc:
        # arq took a slot (semaphore and job counter) for the job it was claiming when
        # Redis failed: only its pipeline can raise, and that comes after both.
        self.job_counter -= 1
        self.sem.release()
        log.warning("a job claim failed on a Redis error; trying again at the next poll: %s", exc)


def install() -> None:
    """Wrap arq's `Worker.start_jobs` (idempotent)."""
    arq.worker.Worker.start_jobs = start_jobs_surviving_redis_loss  # type: ignore[method-assign]
