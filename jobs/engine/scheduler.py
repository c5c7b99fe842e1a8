"""Fair scheduling: which due job a worker with a free slot starts next.

Every waiting job sits in its kind's fair queue (`lua/fair.lua`), sorted per account by
due time. A worker claims as many jobs as it has free slots in one script
(`lua/claim.lua`): kinds take turns slot by slot, and within a kind the accounts that have
a due job take turns, round-robin, so an account with ten thousand queued analyses delays
another account's next analysis by at most the time a slot takes to free, not by its whole
backlog (Hatchet's GROUP_ROUND_ROBIN, Temporal's fairness keys). Retries and deferred jobs
keep their due times: an account joins the turn when its first job falls due.

`ACCOUNT_LIMITS`' `max_running` caps an account's claimed and running jobs across all
workers (counted in Redis at the claim); an account at its cap, or paused by an operator,
keeps its place while the others go ahead. A paused kind is not claimed at all. A claim
that never becomes a run (its worker died in between) is put back by `requeue_stale`.
With `FAIR_SCHEDULING=false` every kind is one first-due-first-served queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from jobs.engine import keys
from jobs.engine.records import JobState, now_ms, text
from jobs.engine.scripts import (
    CLAIM,
    REQUEUE,
    ClaimArgs,
    ClaimKeys,
    FairKeys,
    RequeueArgs,
    RequeueKeys,
)
from jobs.settings import Settings

# A claim not started after this long was lost between the claim and the run.
STALE_CLAIM_MS = 30_000
# How many turns one claim may look at (blocked and paused accounts pass their turn).
SCAN_PER_SLOT = 8
FIFO_BUCKET = "~"


def bucket(settings: Settings, account: str) -> str:
    """The queue a job waits in within its kind: its account's, or the single FIFO one."""
    return account if settings.fair_scheduling else FIFO_BUCKET


def fair_keys(kind: str) -> FairKeys:
    return FairKeys(
        queue=keys.fair_queue(kind),
        ring=keys.fair_ring(kind),
        sleep=keys.fair_sleep(kind),
        turn=keys.FAIR_TURN,
        backlog=keys.FAIR_BACKLOG,
    )


@dataclass(frozen=True, slots=True)
class AccountLoad:
    """One account's share of the queue, for `/health/queues`."""

    account: str
    queued: int
    running: int
    oldest_queued_age_seconds: float


class Scheduler:
    """Claims jobs fairly for one worker's kinds; operators pause and resume kinds and
    accounts."""

    def __init__(self, redis: Redis, settings: Settings, kinds: Sequence[str]) -> None:
        self.redis = redis
        self.settings = settings
        self.kinds = sorted(kinds)
        per_kind: list[str] = []
        for kind in self.kinds:
            per_kind += [
                keys.fair_queue(kind),
                keys.fair_ring(kind),
                keys.fair_sleep(kind),
                keys.fair_claimed(kind),
            ]
        self._claim_keys = ClaimKeys(
            turn=keys.FAIR_TURN,
            running=keys.FAIR_RUNNING,
            backlog=keys.FAIR_BACKLOG,
            limits=keys.FAIR_LIMITS,
            paused_kinds=keys.PAUSED_KINDS,
            paused_accounts=keys.PAUSED_ACCOUNTS,
            per_kind=tuple(per_kind),
        )

    async def claim(self, slots: int) -> list[tuple[str, int]]:
        """Up to `slots` due jobs, fairly chosen, each as (job id, due ms)."""
        if slots <= 0:
            return []
        answer = await CLAIM(
            self.redis,
            self._claim_keys,
            ClaimArgs(
                now_ms=now_ms(),
                slots=slots,
                scan_limit=SCAN_PER_SLOT * slots + 32,
                kinds=tuple(self.kinds),
            ),
        )
        return [(text(answer[i]) or "", int(answer[i + 1])) for i in range(0, len(answer), 2)]

    async def publish_limits(self) -> None:
        """Write `ACCOUNT_LIMITS`' max_running where every worker's claim reads it."""
        limits = {
            account: str(limit.max_running)
            for account, limit in self.settings.account_limits.items()
            if limit.max_running
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.FAIR_LIMITS)
            if limits:
                pipe.hset(keys.FAIR_LIMITS, mapping=limits)
            await pipe.execute()

    async def requeue_stale(self, older_than_ms: int = STALE_CLAIM_MS) -> int:
        """Put back the claims that never became runs; returns how many went back."""
        requeued = 0
        cutoff = now_ms() - older_than_ms
        for kind in self.kinds:
            stale = await self.redis.zrangebyscore(keys.fair_claimed(kind), "-inf", cutoff)
            for member in stale:
                job_id = member.decode()
                account = text(await self.redis.hget(keys.record(job_id), "account")) or ""
                fair = fair_keys(kind)
                answer = await REQUEUE(
                    self.redis,
                    RequeueKeys(
                        record=keys.record(job_id),
                        claimed=keys.fair_claimed(kind),
                        waiting=keys.waiting(kind),
                        queue=fair.queue,
                        ring=fair.ring,
                        sleep=fair.sleep,
                        turn=fair.turn,
                        backlog=fair.backlog,
                        fair_running=keys.FAIR_RUNNING,
                    ),
                    RequeueArgs(id=job_id, now_ms=now_ms(), bucket=bucket(self.settings, account)),
                )
                requeued += text(answer) == "requeued"
        return requeued

    async def sweep_running(self) -> int:
        """Drop the places in the running count held by jobs that neither run nor wait for
        their start (their record ended or expired); returns how many went."""
        dropped = 0
        async for member, _ in self.redis.zscan_iter(keys.FAIR_RUNNING, count=500):
            job_id = member.decode().partition("|")[2]
            raw = await self.redis.hmget(keys.record(job_id), ["state", "kind"])
            state, kind = text(raw[0]), text(raw[1]) or ""
            if state == JobState.RUNNING.value:
                continue
            claimed = kind and await self.redis.zscore(keys.fair_claimed(kind), job_id)
            if state in (JobState.QUEUED.value, JobState.RETRYING.value) and claimed:
                continue
            dropped += await self.redis.zrem(keys.FAIR_RUNNING, member)
        return dropped

    async def pause(self, kind: str | None = None, account: str | None = None) -> None:
        """Stop starting jobs of a kind or an account; they stay queued, running ones finish."""
        if kind:
            await self.redis.sadd(keys.PAUSED_KINDS, kind)
        if account:
            await self.redis.sadd(keys.PAUSED_ACCOUNTS, account)

    async def resume(self, kind: str | None = None, account: str | None = None) -> None:
        """Start a paused kind's or account's jobs again, and wake the workers."""
        if kind:
            await self.redis.srem(keys.PAUSED_KINDS, kind)
        if account:
            await self.redis.srem(keys.PAUSED_ACCOUNTS, account)
        await self.redis.publish(keys.wake(self.settings.queue_name), "")

    async def paused(self) -> dict[str, list[str]]:
        """What operators paused."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.PAUSED_KINDS)
            pipe.smembers(keys.PAUSED_ACCOUNTS)
            kinds, accounts = await pipe.execute()
        return {
            "kinds": sorted(k.decode() for k in kinds),
            "accounts": sorted(a.decode() for a in accounts),
        }

    async def busiest(self, top: int = 20) -> list[AccountLoad]:
        """The accounts with the most waiting jobs (at most `top`): for each, its jobs due
        now, running, and how long its oldest due job has waited. (Without fair
        scheduling an account's jobs share one queue: `queued` counts all it waits for.)"""
        backlog = await self.redis.zrevrange(keys.FAIR_BACKLOG, 0, top - 1, withscores=True)
        if not backlog:
            return []
        now = now_ms()
        fair = self.settings.fair_scheduling
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in backlog:
                account = member.decode()
                low, high = f"[{account}|", f"[{account}|{now:013d}|\xff"
                for kind in self.kinds:
                    if fair:
                        pipe.zlexcount(keys.fair_queue(kind), low, high)
                        pipe.zrangebylex(keys.fair_queue(kind), low, high, start=0, num=1)
                pipe.zlexcount(keys.FAIR_RUNNING, f"[{account}|", f"[{account}|\xff")
            replies = await pipe.execute()
        loads = []
        at = 0
        for member, waiting in backlog:
            queued, oldest = 0, None
            if fair:
                for _ in self.kinds:
                    count, head = replies[at], replies[at + 1]
                    at += 2
                    queued += int(count)
                    if head:
                        due = int(head[0].decode().split("|")[1])
                        oldest = due if oldest is None else min(oldest, due)
            else:
                queued = int(waiting)
            running = int(replies[at])
            at += 1
            age = round(max(0.0, (now - oldest) / 1000), 3) if oldest is not None else 0.0
            loads.append(AccountLoad(member.decode(), queued, running, age))
        loads.sort(key=lambda load: (-load.queued, load.account))
        return loads
