"""The job store: every read and transition of job records, each write one atomic step.

Routes and the dashboard list through its methods (`list_account_jobs`, `list_jobs`,
`list_dead_letters`, `list_index`); no caller builds a key. A kind's policies (attempts,
retention, listing, dead letters, events) come from the registry; a kind it does not
know (a job left by an older release) gets the settings' defaults.
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

from redis.asyncio import Redis

from jobs import metrics, tracing
from jobs.clients import wait_for_replicas
from jobs.engine import arq_adapter as arq
from jobs.engine import keys
from jobs.engine.records import (
    Busy,
    Enqueued,
    JobRecord,
    JobState,
    Page,
    decode_cursor,
    encode_cursor,
    new_job_id,
    now_ms,
    text,
)
from jobs.engine.registry import JobKind, Registry
from jobs.engine.scheduler import bucket, fair_keys
from jobs.engine.scripts import (
    BEAT,
    CANCEL,
    ENQUEUE,
    FINISH,
    PROGRESS,
    REAP,
    REOPEN,
    START,
    BeatArgs,
    BeatKeys,
    CancelArgs,
    CancelKeys,
    EnqueueArgs,
    EnqueueKeys,
    FinishArgs,
    JobKeys,
    ProgressArgs,
    ProgressKeys,
    ReapArgs,
    ReopenArgs,
    ReopenKeys,
    StartArgs,
    StartKeys,
)
from jobs.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from jobs.settings import Settings


def _flag(value: bool) -> str:
    return "1" if value else ""


async def _no_op(*_: Any) -> Any:
    return None


_DEFAULT = JobKind("-", _no_op)
# When an account whose queue is full may try again: a guess, as jobs end at their pace.
QUEUE_FULL_RETRY_S = 5.0


class JobStore:
    """Reads and transitions job records; every write is one atomic Redis step."""

    def __init__(self, redis: Redis, settings: Settings, registry: Registry) -> None:
        self.redis = redis
        self.settings = settings
        self.registry = registry
        self.queue_name = settings.queue_name
        self.wake_channel = keys.wake(settings.queue_name)

    def policy(self, kind: str) -> JobKind:
        """The kind's declaration, or the defaults for a kind no domain declares."""
        return self.registry.kind(kind) or _DEFAULT

    def retention_s(self, kind: str) -> int:
        return self.policy(kind).retention(self.settings)

    def _outbox(self, kind: str, state: JobState) -> bool:
        """Whether a job that ended in `state` goes to the outbox: for its webhook event,
        or, as a dead letter, for its failure alert."""
        policy = self.policy(kind)
        if state == JobState.SUCCEEDED:
            return policy.events is not None
        return state == JobState.FAILED and (policy.events is not None or policy.dead_letters)

    def _job_keys(self, job_id: str, kind: str, account: str, worker: str | None) -> JobKeys:
        arq_keys = arq.job_keys(job_id)
        fair = fair_keys(kind)
        return JobKeys(
            record=keys.record(job_id),
            attempts=keys.attempts(job_id),
            waiting=keys.waiting(kind),
            running=keys.running(kind),
            active=keys.ACTIVE,
            dlq=keys.DLQ,
            dlq_open=keys.DLQ_OPEN,
            worker_jobs=keys.worker_jobs(worker) if worker else keys.NONE,
            arq_job=arq_keys.job,
            arq_retry=arq_keys.retry,
            arq_abort=arq.ABORT_KEY,
            arq_queue=self.queue_name,
            outbox=keys.OUTBOX,
            stats=keys.stats(now_ms() // 60000),
            unfinished=keys.unfinished(account),
            queue=fair.queue,
            ring=fair.ring,
            sleep=fair.sleep,
            turn=fair.turn,
            backlog=fair.backlog,
            fair_running=keys.FAIR_RUNNING,
        )

    async def _enqueue(self, enqueue_keys: EnqueueKeys, args: EnqueueArgs) -> Any:
        """Run the enqueue script; with `REDIS_MIN_REPLICAS`, on one connection followed by
        `WAIT`, so the enqueue is acknowledged only once that many replicas hold it."""
        if not self.settings.redis_min_replicas:
            return await ENQUEUE(self.redis, enqueue_keys, args)
        async with self.redis.client() as conn:
            answer = await ENQUEUE(conn, enqueue_keys, args)
            await wait_for_replicas(conn, self.settings)
            return answer

    async def create(
        self,
        *,
        kind: str,
        account: str,
        args: dict[str, Any],
        idempotency_key: str | None = None,
        fingerprint: str = "",
        request_id: str | None = None,
        replay_of: str | None = None,
        job_id: str | None = None,
        delay_s: float = 0.0,
        listing: str | None = None,
        enforce_limits: bool = True,
    ) -> Enqueued:
        """Write the record and enqueue its arq job in one round trip (the new record is
        returned with it).

        With an `idempotency_key` already used by this account, no job is made: the earlier
        job is returned (`replayed=True`) when the fingerprint matches, and `InvalidInput`
        is raised when it does not. A fixed `job_id` already taken returns that job. The job
        is due after `delay_s`; `listing` names the index it is listed in (by default the
        account's jobs, for a listed kind). An account at its `max_queued` unfinished jobs
        gets `TooManyRequests` (`account_queue_full`) and nothing is written.
        """
        policy = self.policy(kind)
        job_id = job_id or new_job_id()
        created = now_ms()
        due = created + int(delay_s * 1000)
        retention = policy.retention(self.settings)
        max_attempts = policy.attempts_allowed(self.settings)
        args_json = json.dumps(args, separators=(",", ":"))
        fields = {
            "id": job_id,
            "kind": kind,
            "account": account,
            "state": JobState.QUEUED.value,
            "attempt": "0",
            "max_attempts": str(max_attempts),
            "progress": "0",
            "created_at": str(created),
            "updated_at": str(created),
            "args": args_json,
        }
        if due > created:
            fields["next_attempt_at"] = str(due)
        if request_id:
            fields["request_id"] = request_id
        if replay_of:
            fields["replay_of"] = replay_of
        # The enqueuing span's context (while tracing): each attempt's span is its child.
        fields.update(tracing.trace_fields())
        if listing is None and policy.listed:
            listing = keys.account_jobs(account)
        max_queued = self.settings.limits_for(account).max_queued if enforce_limits else None
        fair = fair_keys(kind)
        status, found = await self._enqueue(
            EnqueueKeys(
                record=keys.record(job_id),
                listing=listing or keys.NONE,
                all_jobs=keys.ALL_JOBS,
                active=keys.ACTIVE,
                waiting=keys.waiting(kind),
                kinds=keys.KINDS,
                arq_job=arq.job_keys(job_id).job,
                arq_queue=self.queue_name,
                idempotency=(
                    keys.idempotency(account, idempotency_key) if idempotency_key else keys.NONE
                ),
                replayed_record=keys.record(replay_of) if replay_of else keys.NONE,
                replayed_attempts=keys.attempts(replay_of) if replay_of else keys.NONE,
                dlq_open=keys.DLQ_OPEN,
                unfinished=keys.unfinished(account),
                queue=fair.queue,
                ring=fair.ring,
                sleep=fair.sleep,
                turn=fair.turn,
                backlog=fair.backlog,
            ),
            EnqueueArgs(
                id=job_id,
                kind=kind,
                created_ms=created,
                due_ms=due,
                arq_payload=arq.job_payload(kind, job_id, created),
                arq_ttl_ms=(retention + int(delay_s)) * 1000,
                retention_s=retention,
                idempotency_ttl_s=(self.settings.idempotency_ttl_seconds if idempotency_key else 0),
                fingerprint=fingerprint,
                replay_of=replay_of or "",
                listed=_flag(listing is not None),
                in_all_jobs=_flag(policy.listed),
                counted=_flag(policy.listed),
                wake_channel=self.wake_channel,
                max_queued=max_queued or 0,
                bucket=bucket(self.settings, account),
                account=account,
                fields_json=json.dumps(fields, separators=(",", ":")),
            ),
        )
        status, found = text(status), text(found) or job_id
        tracing.job_enqueued(found, kind, status or "")
        if status == "mismatch":
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                type="idempotency_key_reused",
                job_id=found,
            )
        if status == "already_replayed":
            raise Conflict(f"this dead letter was already replayed as {found}", replayed_as=found)
        if status == "not_dead":
            raise NotFound("no such dead letter")
        if status == "queue_full":
            raise TooManyRequests(
                f"the account has {found} unfinished jobs, its limit (ACCOUNT_LIMITS "
                "max_queued): try again when some have ended",
                type="account_queue_full",
                retry_after=QUEUE_FULL_RETRY_S,
                max_queued=int(found),
            )
        if status != "created":
            return Enqueued(job_id=found, replayed=status == "replayed")
        metrics.JOBS_ENQUEUED.labels(kind).inc()
        # Exactly what the script wrote, so answering the POST needs no second round trip.
        record = JobRecord(
            id=job_id,
            kind=kind,
            account=account,
            state=JobState.QUEUED,
            attempt=0,
            max_attempts=max_attempts,
            created_at=created,
            updated_at=created,
            next_attempt_at=due if due > created else None,
            args=json.loads(args_json),
            request_id=request_id or None,
            traceparent=fields.get("traceparent"),
            tracestate=fields.get("tracestate"),
            replay_of=replay_of or None,
        )
        return Enqueued(job_id=job_id, replayed=False, record=record)

    async def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when it never existed or has expired."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.record(job_id))
            pipe.lrange(keys.attempts(job_id), 0, -1)
            raw, attempts = await pipe.execute()
        if not raw:
            return None
        return JobRecord.from_redis(raw, attempts)

    def channel(self, job_id: str) -> str:
        """The pub/sub channel every change of the job is announced on."""
        return keys.record(job_id)

    async def state(self, job_id: str) -> JobState | None:
        """A job's state alone (one HGET), or None when it has no record."""
        value = text(await self.redis.hget(keys.record(job_id), "state"))
        return JobState(value) if value else None

    async def get_many(self, job_ids: list[str]) -> list[JobRecord]:
        """The records that still exist, in the order asked."""
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.record(job_id))
                pipe.lrange(keys.attempts(job_id), 0, -1)
            replies = await pipe.execute()
        return [
            JobRecord.from_redis(raw, attempts)
            for raw, attempts in zip(replies[::2], replies[1::2], strict=True)
            if raw
        ]

    async def _index_after(
        self, index_key: str, bound: tuple[int, str] | None, count: int
    ) -> tuple[list[tuple[str, int]], bool]:
        """Up to `count` index entries after `bound`, newest first, and whether that is all."""
        hi: int | str = "+inf" if bound is None else bound[0]
        num = count + 16
        while True:
            raw = await self.redis.zrevrangebyscore(
                index_key, hi, "-inf", start=0, num=num, withscores=True
            )
            entries = [(text(m) or "", int(s)) for m, s in raw]
            if bound is not None:
                # Entries sharing the bound's millisecond sort by id: skip those already seen.
                entries = [(m, s) for m, s in entries if not (s == bound[0] and m >= bound[1])]
            if entries or len(raw) < num:
                return entries[:count], len(raw) < num and len(entries) <= count
            num *= 2

    async def list_index(
        self,
        index_key: str,
        *,
        limit: int,
        cursor: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        account: str | None = None,
        scan_limit: int = 2000,
    ) -> Page:
        """Newest first from a zset index, filtered; reads at most `scan_limit` index entries."""
        bound = decode_cursor(cursor) if cursor else None
        items: list[JobRecord] = []
        scanned = 0
        while len(items) < limit and scanned < scan_limit:
            entries, last_batch = await self._index_after(index_key, bound, max(limit, 50))
            records = {r.id: r for r in await self.get_many([m for m, _ in entries])}
            for member, score in entries:
                scanned += 1
                bound = (score, member)
                record = records.get(member)
                if (
                    record is not None
                    and (not state or record.state == state)
                    and (not kind or record.kind == kind)
                    and (not account or record.account == account)
                ):
                    items.append(record)
                    if len(items) >= limit:
                        break
            if last_batch and (not entries or bound == (entries[-1][1], entries[-1][0])):
                return Page(items=items, next_cursor=None)
        return Page(items=items, next_cursor=encode_cursor(*bound) if bound else None)

    async def list_account_jobs(self, account: str, **filters: Any) -> Page:
        """An account's jobs, newest first (`limit`, `cursor`, `state`, `kind`)."""
        return await self.list_index(keys.account_jobs(account), **filters)

    async def list_jobs(self, **filters: Any) -> Page:
        """Every account's listed jobs, newest first (operators)."""
        return await self.list_index(keys.ALL_JOBS, **filters)

    async def list_dead_letters(self, **filters: Any) -> Page:
        """Dead letters, newest failure first (operators)."""
        return await self.list_index(keys.DLQ, **filters)

    async def mark_started(
        self, job_id: str, kind: str, worker: str, run_token: str | None = None
    ) -> JobRecord | Busy | None:
        """Move the record to `running` for its next attempt; None if it has no record.

        A record already finished (cancelled, or failed by the reconciler), or one whose
        client asked to cancel it before it started, is returned unchanged so the caller
        can skip the run; `Busy` when another live worker runs it. `run_token` (fresh by
        default) names this start: the same start sent again, as redis-py does when the
        connection drops before Redis's answer arrives, does not start a second attempt.
        """
        started = now_ms()
        raw = await START(
            self.redis,
            StartKeys(
                record=keys.record(job_id),
                attempts=keys.attempts(job_id),
                waiting=keys.waiting(kind),
                running=keys.running(kind),
                workers=keys.WORKERS,
                worker_jobs=keys.worker_jobs(worker),
                claimed=keys.fair_claimed(kind),
                fair_running=keys.FAIR_RUNNING,
            ),
            StartArgs(
                id=job_id,
                now_ms=started,
                worker=worker,
                lease_ms=int(self.settings.worker_lease_seconds * 1000),
                retention_s=self.retention_s(kind),
                run_token=run_token or uuid4().hex,
            ),
        )
        if not raw:
            return None
        if text(raw[0]) == "busy":
            return Busy(owner=text(raw[1]) or "")
        record = JobRecord.from_redis(raw)
        if record.state == JobState.RUNNING:
            record.attempts = [{"attempt": record.attempt, "started_at": started, "worker": worker}]
        return record

    async def finish(
        self,
        record: JobRecord,
        state: JobState,
        *,
        attempt_entry: dict[str, Any] | None = None,
        due_ms: int | None = None,
        orphan_only: bool = False,
        waiting_only: bool = False,
        owner: str | None = None,
        undo_attempt: bool = False,
        drop_entry: bool = False,
        **fields: Any,
    ) -> bool:
        """Record an attempt's outcome; False when the record was missing or already final.

        `owner`: apply only while that worker still runs the job (a worker declared dead
        must not overwrite its successor). `orphan_only`: apply only if arq holds no job.
        `waiting_only`: apply only while the job waits (no worker has started it).
        `undo_attempt`: the run was handed back unfinished, so it does not count.
        `drop_entry`: forget the run's history entry too (a step of a job that continues).
        """
        pairs: list[str | int | float] = []
        for name, value in fields.items():
            if isinstance(value, dict | list) or name in ("result", "error"):
                value = json.dumps(value, separators=(",", ":"))
            pairs += [name, "" if value is None else value]
        guard = "orphan" if orphan_only else "waiting" if waiting_only else owner or ""
        policy = self.policy(record.kind)
        done = await FINISH(
            self.redis,
            self._job_keys(record.id, record.kind, record.account, owner or record.worker),
            FinishArgs(
                id=record.id,
                state=state.value,
                now_ms=now_ms(),
                entry_json=json.dumps(attempt_entry) if attempt_entry else "",
                retention_s=policy.retention(self.settings),
                due_ms=due_ms or 0,
                guard=guard,
                undo_attempt=_flag(undo_attempt),
                to_outbox=_flag(self._outbox(record.kind, state)),
                dead_letter=_flag(policy.dead_letters),
                wake_channel=self.wake_channel,
                bucket=bucket(self.settings, record.account),
                drop_entry=_flag(drop_entry),
                fields=tuple(pairs),
            ),
        )
        return bool(done)

    async def cancel(self, record: JobRecord) -> str:
        """Cancel a job: 'cancelled' at once when it was waiting, 'cancelling' when its
        worker must stop it, or 'ended:<state>' when it had already ended."""
        arq_keys = arq.job_keys(record.id)
        answer = await CANCEL(
            self.redis,
            CancelKeys(
                record=keys.record(record.id),
                attempts=keys.attempts(record.id),
                waiting=keys.waiting(record.kind),
                active=keys.ACTIVE,
                arq_job=arq_keys.job,
                arq_retry=arq_keys.retry,
                arq_abort=arq.ABORT_KEY,
                arq_queue=self.queue_name,
                claimed=keys.fair_claimed(record.kind),
                unfinished=keys.unfinished(record.account),
                queue=keys.fair_queue(record.kind),
                backlog=keys.FAIR_BACKLOG,
            ),
            CancelArgs(id=record.id, now_ms=now_ms(), retention_s=self.retention_s(record.kind)),
        )
        return text(answer) or "missing"

    async def cancel_requested(self, job_id: str) -> bool:
        """Whether a client asked for this job to be cancelled."""
        return bool(await self.redis.hexists(keys.record(job_id), "cancel_requested_at"))

    async def run_again_now(self, record: JobRecord) -> str:
        """Make a waiting job due now (it keeps its schedule), or give an ended one one more
        attempt now: 'due', 'reopened', 'running' (left alone) or 'missing'."""
        fair = fair_keys(record.kind)
        answer = await REOPEN(
            self.redis,
            ReopenKeys(
                record=keys.record(record.id),
                active=keys.ACTIVE,
                waiting=keys.waiting(record.kind),
                arq_job=arq.job_keys(record.id).job,
                arq_queue=self.queue_name,
                claimed=keys.fair_claimed(record.kind),
                queue=fair.queue,
                ring=fair.ring,
                sleep=fair.sleep,
                turn=fair.turn,
                backlog=fair.backlog,
            ),
            ReopenArgs(
                id=record.id,
                now_ms=now_ms(),
                arq_payload=arq.job_payload(record.kind, record.id, record.created_at),
                arq_ttl_ms=self.retention_s(record.kind) * 1000,
                retention_s=self.retention_s(record.kind),
                wake_channel=self.wake_channel,
                bucket=bucket(self.settings, record.account),
            ),
        )
        return text(answer) or "missing"

    async def beat(self, worker: str) -> bool:
        """Refresh a worker's heartbeat; False when it was declared dead."""
        answer = await BEAT(
            self.redis,
            BeatKeys(workers=keys.WORKERS, fence=keys.fence(worker)),
            BeatArgs(worker=worker, now_s=time.time()),
        )
        return text(answer) == "ok"

    async def workers_online(self, lease_s: float) -> int:
        """How many workers beat within the last lease."""
        return int(await self.redis.zcount(keys.WORKERS, time.time() - lease_s, "+inf"))

    async def _reap(self, job_id: str, worker: str, crash_cap: int, crashed: bool) -> str:
        raw = await self.redis.hmget(keys.record(job_id), ["kind", "account"])
        kind, account = text(raw[0]) or "-", text(raw[1]) or "-"
        policy = self.policy(kind)
        answer = text(
            await REAP(
                self.redis,
                self._job_keys(job_id, kind, account, worker),
                ReapArgs(
                    id=job_id,
                    dead_worker=worker,
                    now_ms=now_ms(),
                    crash_cap=crash_cap,
                    retention_s=policy.retention(self.settings),
                    dead_letter=_flag(policy.dead_letters),
                    to_outbox=_flag(self._outbox(kind, JobState.FAILED)),
                    wake_channel=self.wake_channel,
                    crashed=_flag(crashed),
                    bucket=bucket(self.settings, account),
                ),
            )
        )
        if answer == "dead":
            metrics.JOBS_FAILED.labels(kind).inc()
            if policy.dead_letters:
                metrics.JOBS_DEAD_LETTERED.labels(kind).inc()
        return answer or ""

    async def reap_worker(
        self, worker: str, crash_cap: int, crashed: bool = True
    ) -> dict[str, str]:
        """Release every job of a dead worker (or fail it past the crash cap), fence the
        worker so it cannot write outcomes if it was only stalled, and forget it.
        `crashed=False`: the worker is stopping cleanly and hands back what it still holds
        (a run cut off between its start and its first await), without counting a crash."""
        await self.redis.set(keys.fence(worker), 1, ex=24 * 3600)
        outcomes: dict[str, str] = {}
        for member in await self.redis.smembers(keys.worker_jobs(worker)):
            job_id = member.decode()
            outcomes[job_id] = await self._reap(job_id, worker, crash_cap, crashed)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.WORKERS, worker)
            pipe.delete(keys.worker_jobs(worker))
            await pipe.execute()
        return outcomes

    async def release_unrecorded(self, worker: str, running: set[str], idle_ms: int) -> list[str]:
        """Hand back the jobs a live worker holds in Redis but no longer runs, untouched for
        `idle_ms`: runs whose outcome could not be recorded (Redis was gone longer than its
        retries). They start again without spending an attempt."""
        held = {m.decode() for m in await self.redis.smembers(keys.worker_jobs(worker))}
        stale = now_ms() - idle_ms
        released = []
        for record in await self.get_many(sorted(held - running)):
            if record.state != JobState.RUNNING or (record.updated_at or 0) >= stale:
                continue  # ended meanwhile, or just started (not yet in `running`)
            if await self._reap(record.id, worker, 0, crashed=False) == "released":
                released.append(record.id)
        return released

    async def dead_workers(self, silent_s: float) -> list[str]:
        """Workers whose last heartbeat is older than `silent_s`."""
        stale = await self.redis.zrangebyscore(keys.WORKERS, "-inf", f"({time.time() - silent_s}")
        return [w.decode() for w in stale]

    async def get_dead_letter(self, job_id: str) -> JobRecord | None:
        """The record of a job kept as a dead letter, or None."""
        record = await self.get(job_id)
        if record is None or record.state != JobState.FAILED:
            return None
        return record if self.policy(record.kind).dead_letters else None

    async def replay(self, record: JobRecord, request_id: str | None = None) -> Enqueued:
        """Run a dead letter again as a new job of the same account, linked by `replay_of`;
        `Conflict` when it was already replayed."""
        return await self.create(
            kind=record.kind,
            account=record.account,
            args=record.args,
            replay_of=record.id,
            request_id=request_id,
        )

    async def purge_dead_letter(self, record: JobRecord) -> None:
        """Forget a dead letter for good (an operator's decision)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.record(record.id), keys.attempts(record.id))
            pipe.zrem(keys.DLQ, record.id)
            pipe.zrem(keys.DLQ_OPEN, record.id)
            await pipe.execute()

    async def forget_expired_dead_letters(self) -> int:
        """Drop dead-letter index entries whose record has expired (replayed ones, after the
        retention); an open dead letter is never dropped."""
        forgotten = 0
        async for member, _ in self.redis.zscan_iter(keys.DLQ, count=500):
            if not await self.redis.exists(keys.record(member.decode())):
                forgotten += await self.redis.zrem(keys.DLQ, member)
        return forgotten

    async def throughput(self, minutes: int = 60) -> list[dict[str, int]]:
        """Jobs that succeeded and failed per minute, oldest first, ending now."""
        current = now_ms() // 60000
        window = list(range(current - minutes + 1, current + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in window:
                pipe.hgetall(keys.stats(minute))
            replies = await pipe.execute()
        return [
            {
                "minute": minute * 60000,
                "succeeded": int(reply.get(b"succeeded", 0)),
                "failed": int(reply.get(b"failed", 0)),
            }
            for minute, reply in zip(window, replies, strict=True)
        ]

    async def set_progress(self, job_id: str, progress: float, stage: str | None) -> None:
        """Store a running job's progress (0..1) and stage, and tell its watchers."""
        await PROGRESS(
            self.redis,
            ProgressKeys(record=keys.record(job_id)),
            ProgressArgs(
                progress=progress,
                now_ms=now_ms(),
                stage=stage or "",
                has_stage=_flag(stage is not None),
            ),
        )
