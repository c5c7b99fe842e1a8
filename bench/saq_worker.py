"""The SAQ peer: `saq bench.saq_worker.settings`, reading `REDIS_URL` and `SAQ_CONCURRENCY`
when the CLI imports it.

SAQ 0.26 at its defaults (BLMOVE-based dequeue, `concurrency=10`) except the concurrency,
with the same two functions as the other sides: `noop` (one `INCR bench:done`) and `mark`
(push the wall-clock time it started on `bench:marks`). SAQ runs in `.venv` itself: its
redis-py range (>= 4.2, < 8) includes arq's.
"""

from __future__ import annotations

import os
import time
from typing import Any

from saq import Queue

from bench.workers import DONE_KEY, MARKS_KEY

QUEUE_NAME = "bench"


async def noop(ctx: dict[str, Any]) -> None:
    """The trivial job: one INCR."""
    await ctx["worker"].queue.redis.incr(DONE_KEY)


async def mark(ctx: dict[str, Any]) -> None:
    """The latency probe: push the wall-clock time it started."""
    await ctx["worker"].queue.redis.rpush(MARKS_KEY, repr(time.time()))


def queue(url: str) -> Queue:
    """The benchmark's SAQ queue on `url`."""
    return Queue.from_url(url, name=QUEUE_NAME)


def __getattr__(name: str) -> Any:
    # The settings are built when `saq` imports them, from the environment it was given.
    if name == "settings":
        return {
            "queue": queue(os.environ["REDIS_URL"]),
            "functions": [noop, mark],
            "concurrency": int(os.environ.get("SAQ_CONCURRENCY", "10")),
        }
    raise AttributeError(name)
