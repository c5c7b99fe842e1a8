"""Queue health from the job records' indexes: due, retrying, running, dead, oldest age,
the busiest accounts and what operators paused."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from redis.asyncio import Redis

from jobs import metrics
from jobs.engine import keys
from jobs.engine.records import now_ms
from jobs.engine.scheduler import AccountLoad, Scheduler
from jobs.settings import Settings

# /health/queues names at most this many accounts: the ones with the most due jobs.
BY_ACCOUNT_TOP = 20


@dataclass
class KindCounts:
    queued: int = 0
    retrying: int = 0
    running: int = 0


@dataclass
class QueueHealth:
    """What `/health/queues` reports."""

    workers_online: int
    queued: int
    running: int
    retrying: int
    dead_letters: int
    oldest_queued_age_seconds: float
    healthy: bool
    problems: list[str] = field(default_factory=list)
    by_kind: dict[str, KindCounts] = field(default_factory=dict)
    by_account: list[AccountLoad] = field(default_factory=list)
    paused: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def queue_health(redis: Redis, settings: Settings) -> QueueHealth:
    """Count the work in the queue (due now, waiting for a retry, running) and the dead letters."""
    now = now_ms()
    kinds = sorted(k.decode() for k in await redis.smembers(keys.KINDS))
    async with redis.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.zcount(keys.waiting(kind), "-inf", now)
            pipe.zcount(keys.waiting(kind), f"({now}", "+inf")
            pipe.zcard(keys.running(kind))
            pipe.zrangebyscore(keys.waiting(kind), "-inf", now, start=0, num=1, withscores=True)
        pipe.zcard(keys.DLQ_OPEN)
        pipe.zcount(keys.WORKERS, time.time() - settings.worker_lease_seconds, "+inf")
        replies = await pipe.execute()
    by_kind: dict[str, KindCounts] = {}
    oldest_due: float | None = None
    for i, kind in enumerate(kinds):
        queued, retrying, running, head = replies[i * 4 : i * 4 + 4]
        by_kind[kind] = KindCounts(queued=queued, retrying=retrying, running=running)
        if head:
            due = head[0][1]
            oldest_due = due if oldest_due is None else min(oldest_due, due)
    online = int(replies[-1])
    oldest_age = max(0.0, (now - oldest_due) / 1000) if oldest_due is not None else 0.0
    scheduler = Scheduler(redis, settings, kinds)
    by_account = await scheduler.busiest(BY_ACCOUNT_TOP)
    paused = await scheduler.paused()
    queued_total = sum(c.queued for c in by_kind.values())
    problems = []
    if online == 0 and (queued_total or any(c.retrying for c in by_kind.values())):
        problems.append("no worker is online while work is waiting")
    if queued_total > settings.queue_max_depth:
        problems.append(f"more than {settings.queue_max_depth} jobs are due")
    if oldest_age > settings.queue_max_age_seconds:
        problems.append(f"a job has waited over {settings.queue_max_age_seconds:g}s to start")
    return QueueHealth(
        workers_online=online,
        queued=queued_total,
        running=sum(c.running for c in by_kind.values()),
        retrying=sum(c.retrying for c in by_kind.values()),
        dead_letters=int(replies[-2]),
        oldest_queued_age_seconds=round(oldest_age, 3),
        healthy=not problems,
        problems=problems,
        by_kind=by_kind,
        by_account=by_account,
        paused=paused,
    )


async def refresh_queue_gauges(redis: Redis, settings: Settings) -> None:
    """Set the queue gauges from Redis."""
    health = await queue_health(redis, settings)
    for kind, counts in health.by_kind.items():
        metrics.QUEUE_JOBS.labels(kind, "queued").set(counts.queued)
        metrics.QUEUE_JOBS.labels(kind, "retrying").set(counts.retrying)
        metrics.QUEUE_JOBS.labels(kind, "running").set(counts.running)
    metrics.DEAD_LETTERS.set(health.dead_letters)
    metrics.OLDEST_QUEUED_AGE.set(health.oldest_queued_age_seconds)
    metrics.WORKERS_ONLINE.set(health.workers_online)
