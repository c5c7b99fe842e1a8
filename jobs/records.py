"""Durable job records in Redis: states, transitions, indexes and retention.

The record, not arq, is the source of truth for a job's state. It is written
before the arq job exists (in the same Lua step), updated by the worker at
every transition, and kept for `JOB_RETENTION_SECONDS`; a failed job's record
is kept until its dead letter is replayed or purged.

Keys (all under `lr:`):

    job:<id>               hash: the record
    job:<id>:attempts      list: one JSON entry per attempt
    acct:<account>:jobs    zset: id -> created ms (listing)
    active                 zset: unfinished ids -> created ms (reconciler)
    waiting:<kind>         zset: queued/retrying ids -> due ms (queue health)
    running:<kind>         zset: running ids -> started ms
    kinds                  set: every kind ever enqueued
    dlq / dlq:open         zset: dead-lettered ids -> failed ms (all / not replayed)
    idem:<account>:<hash>  string: Idempotency-Key -> job id and body fingerprint
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from ulid import ULID

from jobs import metrics
from jobs.errors import Conflict, InvalidInput, NotFound
from jobs.settings import Settings

PREFIX = "lr:"
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_RETRY_PREFIX = "arq:retry:"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the state is terminal."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return int(time.time() * 1000)


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def new_job_id() -> str:
    """A new, time-ordered job id."""
    return f"job_{ULID()}"


def record_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def attempts_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:attempts"


def account_index_key(account: str) -> str:
    return f"{PREFIX}acct:{account}:jobs"


def waiting_key(kind: str) -> str:
    return f"{PREFIX}waiting:{kind}"


def running_key(kind: str) -> str:
    return f"{PREFIX}running:{kind}"


def worker_jobs_key(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:jobs"


def fence_key(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:fenced"


WORKERS_KEY = f"{PREFIX}workers"
ACTIVE_KEY = f"{PREFIX}active"
ALL_JOBS_KEY = f"{PREFIX}jobs:all"
ARQ_ABORT_KEY = "arq:abort"
KINDS_KEY = f"{PREFIX}kinds"
DLQ_KEY = f"{PREFIX}dlq"
DLQ_OPEN_KEY = f"{PREFIX}dlq:open"


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _json_or_none(value: str | None) -> Any:
    return json.loads(value) if value else None


@dataclass(slots=True)
class JobRecord:
    """One job as stored; times are epoch milliseconds."""

    id: str
    kind: str
    account: str
    state: JobState
    attempt: int
    max_attempts: int
    created_at: int
    args: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    stage: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    next_attempt_at: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    traceback: str | None = None
    request_id: str | None = None
    replay_of: str | None = None
    replayed_as: str | None = None
    worker: str | None = None
    crashes: int = 0
    cancel_requested_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_redis(
        cls, raw: dict[bytes, bytes] | list[bytes], attempts: list[bytes] | None = None
    ) -> JobRecord:
        """Build a record from HGETALL output (a dict, or the flat list a Lua script returns)."""
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        h = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            id=h["id"] or "",
            kind=h["kind"] or "",
            account=h["account"] or "",
            state=JobState(h["state"]),
            attempt=int(h.get("attempt") or 0),
            max_attempts=int(h.get("max_attempts") or 1),
            created_at=int(h["created_at"] or 0),
            args=_json_or_none(h.get("args")) or {},
            progress=float(h.get("progress") or 0.0),
            stage=h.get("stage") or None,
            started_at=_int_or_none(h.get("started_at")),
            finished_at=_int_or_none(h.get("finished_at")),
            updated_at=_int_or_none(h.get("updated_at")),
            next_attempt_at=_int_or_none(h.get("next_attempt_at")),
            result=_json_or_none(h.get("result")),
            error=_json_or_none(h.get("error")),
            traceback=h.get("traceback") or None,
            request_id=h.get("request_id") or None,
            replay_of=h.get("replay_of") or None,
            replayed_as=h.get("replayed_as") or None,
            worker=h.get("worker") or None,
            crashes=int(h.get("crashes") or 0),
            cancel_requested_at=_int_or_none(h.get("cancel_requested_at")),
            attempts=[json.loads(a) for a in attempts or []],
        )


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What `JobStore.create` did: made a new job, or found the one an Idempotency-Key names.

    `record` is the new job's record as written (no second read needed); None on a replay.
    """

    job_id: str
    replayed: bool
    record: JobRecord | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """`mark_started` found the job running on another live worker."""

    owner: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the cursor of the next, if any."""

    items: list[JobRecord]
    next_cursor: str | None


def _load_script(redis: Redis, name: str) -> AsyncScript:
    source = resources.files("jobs").joinpath(f"lua/{name}.lua").read_text()
    return redis.register_script(source)


def body_fingerprint(method: str, path: str, body: Any) -> str:
    """A stable digest of a request, to tell a retried request from a different one."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def encode_cursor(score: int, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, member = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 1)
        return int(score), member
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API handed out", type="invalid_cursor") from None


class JobStore:
    """Reads and transitions job records; every write is one atomic Redis step."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.queue_name = settings.queue_name
        self._enqueue = _load_script(redis, "enqueue")
        self._start = _load_script(redis, "start")
        self._finish = _load_script(redis, "finish")
        self._cancel = _load_script(redis, "cancel")
        self._beat = _load_script(redis, "beat")
        self._reap = _load_script(redis, "reap")
        self._progress = _load_script(redis, "progress")

    @property
    def retention_s(self) -> int:
        return self.settings.job_retention_seconds

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
    ) -> Enqueued:
        """Write the record and enqueue its arq job in one round trip (the new record is
        returned with it).

        With an `idempotency_key` already used by this account, no job is made:
        the earlier job is returned (`replayed=True`) when the fingerprint matches,
        and `InvalidInput` is raised when it does not.
        """
        job_id = job_id or new_job_id()
        created = now_ms()
        arq_payload = json.dumps(
            {"t": None, "f": kind, "a": [job_id], "k": {}, "et": created}, separators=(",", ":")
        )
        args_json = json.dumps(args, separators=(",", ":"))
        fields = {
            "id": job_id, "kind": kind, "account": account, "state": JobState.QUEUED.value,
            "attempt": "0", "max_attempts": str(self.settings.job_max_tries), "progress": "0",
            "created_at": str(created), "updated_at": str(created), "args": args_json,
        }  # fmt: skip
        if request_id:
            fields["request_id"] = request_id
        if replay_of:
            fields["replay_of"] = replay_of
        idem_key = (
            f"{PREFIX}idem:{account}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
            if idempotency_key
            else f"{PREFIX}idem:-"
        )
        replay_keys = (
            [record_key(replay_of), attempts_key(replay_of)]
            if replay_of
            else [f"{PREFIX}-", f"{PREFIX}-"]
        )
        status, found = await self._enqueue(
            keys=[
                record_key(job_id), account_index_key(account), ACTIVE_KEY, waiting_key(kind),
                KINDS_KEY, ARQ_JOB_PREFIX + job_id, self.queue_name, idem_key,
                *replay_keys, DLQ_OPEN_KEY,
            ],
            args=[
                job_id, kind, created, arq_payload, self.retention_s * 1000, self.retention_s,
                self.settings.idempotency_ttl_seconds if idempotency_key else 0, fingerprint,
                replay_of or "", json.dumps(fields, separators=(",", ":")),
            ],
        )  # fmt: skip
        status, found = _text(status), _text(found) or job_id
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
        if status != "created":
            return Enqueued(job_id=found, replayed=status == "replayed")
        metrics.JOBS_ENQUEUED.labels(kind).inc()
        # Exactly what the script wrote, so answering the POST needs no second round trip.
        record = JobRecord(
            id=job_id, kind=kind, account=account, state=JobState.QUEUED, attempt=0,
            max_attempts=self.settings.job_max_tries, created_at=created, updated_at=created,
            args=json.loads(args_json), request_id=request_id or None,
            replay_of=replay_of or None,
        )  # fmt: skip
        return Enqueued(job_id=job_id, replayed=False, record=record)

    async def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when it never existed or has expired."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(record_key(job_id))
            pipe.lrange(attempts_key(job_id), 0, -1)
            raw, attempts = await pipe.execute()
        if not raw:
            return None
        return JobRecord.from_redis(raw, attempts)

    async def get_many(self, job_ids: list[str]) -> list[JobRecord]:
        """The records that still exist, in the order asked."""
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(record_key(job_id))
                pipe.lrange(attempts_key(job_id), 0, -1)
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
            entries = [(_text(m) or "", int(s)) for m, s in raw]
            if bound is not None:
                # Entries sharing the bound's millisecond sort by id: skip those already seen.
                entries = [(m, s) for m, s in entries if not (s == bound[0] and m >= bound[1])]
            if entries or len(raw) < num:
                return entries[:count], len(raw) < num and len(entries) <= count
            num *= 2

    async def list(
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

    async def mark_started(
        self, job_id: str, kind: str, attempt: int, worker: str
    ) -> JobRecord | Busy | None:
        """Move the record to `running` for this attempt; None if it has no record.

        A record already finished (cancelled, or failed by the reconciler) is returned
        unchanged so the caller can skip the run; `Busy` when another live worker runs it
        (arq's try count is then undone).
        """
        started = now_ms()
        entry = {"attempt": attempt, "started_at": started, "worker": worker}
        raw = await self._start(
            keys=[
                record_key(job_id), attempts_key(job_id), waiting_key(kind), running_key(kind),
                WORKERS_KEY, worker_jobs_key(worker), ARQ_RETRY_PREFIX + job_id,
            ],
            args=[
                job_id, attempt, started, worker, json.dumps(entry), self.retention_s,
                int(self.settings.worker_lease_seconds * 1000),
            ],
        )  # fmt: skip
        if not raw:
            return None
        if _text(raw[0]) == "busy":
            return Busy(owner=_text(raw[1]) or "")
        record = JobRecord.from_redis(raw)
        if not record.state.finished:
            record.attempts = [entry]
        return record

    async def finish(
        self,
        record: JobRecord,
        state: JobState,
        *,
        attempt_entry: dict[str, Any] | None = None,
        due_ms: int | None = None,
        orphan_only: bool = False,
        owner: str | None = None,
        undo_try: bool = False,
        outbox: bool = True,
        **fields: Any,
    ) -> bool:
        """Record an attempt's outcome; False when the record was missing or already final.

        `owner`: apply only while that worker still runs the job (a worker declared dead
        must not overwrite its successor). `orphan_only`: apply only if arq holds no job.
        `undo_try`: the run was handed back unfinished, so arq's try count is decremented.
        `outbox=False`: a succeeded job of a kind without webhook events skips the outbox (a
        failed one always goes there, for its failure alert).
        """
        pairs: list[str | int] = []
        for name, value in fields.items():
            if isinstance(value, dict | list) or name in ("result", "error"):
                value = json.dumps(value, separators=(",", ":"))
            pairs += [name, "" if value is None else value]
        guard = "orphan" if orphan_only else owner or ""
        done = await self._finish(
            keys=[
                record_key(record.id), attempts_key(record.id), waiting_key(record.kind),
                running_key(record.kind), ACTIVE_KEY, DLQ_KEY, DLQ_OPEN_KEY,
                ARQ_JOB_PREFIX + record.id, ARQ_IN_PROGRESS_PREFIX + record.id,
                ARQ_RETRY_PREFIX + record.id, ARQ_ABORT_KEY, self.queue_name,
            ],
            args=[
                record.id, state.value, now_ms(),
                json.dumps(attempt_entry) if attempt_entry else "",
                self.retention_s, due_ms or 0, guard, "1" if undo_try else "",
                "1" if outbox else "", *pairs,
            ],
        )  # fmt: skip
        return bool(done)

    async def cancel(self, record: JobRecord) -> str:
        """Cancel a job: 'cancelled' at once when it was waiting, 'cancelling' when its
        worker must stop it, or 'ended:<state>' when it had already ended."""
        answer = await self._cancel(
            keys=[
                record_key(record.id), waiting_key(record.kind), ACTIVE_KEY,
                ARQ_JOB_PREFIX + record.id, self.queue_name, ARQ_IN_PROGRESS_PREFIX + record.id,
                ARQ_ABORT_KEY, ARQ_RETRY_PREFIX + record.id,
            ],
            args=[record.id, now_ms(), self.retention_s],
        )  # fmt: skip
        return _text(answer) or "missing"

    async def beat(self, worker: str, claim_ttl_ms: int) -> bool:
        """Refresh a worker's heartbeat and its claims; False when it was declared dead."""
        answer = await self._beat(
            keys=[WORKERS_KEY, worker_jobs_key(worker), fence_key(worker)],
            args=[worker, time.time(), claim_ttl_ms],
        )
        return _text(answer) == "ok"

    async def reap_worker(self, worker: str, crash_cap: int) -> dict[str, str]:
        """Release every job of a dead worker (or dead-letter it past the crash cap), fence
        the worker so it cannot write outcomes if it was only stalled, and forget it."""
        await self.redis.set(fence_key(worker), 1, ex=24 * 3600)
        outcomes: dict[str, str] = {}
        for member in await self.redis.smembers(worker_jobs_key(worker)):
            job_id = member.decode()
            kind = _text(await self.redis.hget(record_key(job_id), "kind")) or "-"
            answer = await self._reap(
                keys=[
                    record_key(job_id), attempts_key(job_id), waiting_key(kind),
                    running_key(kind), ACTIVE_KEY, DLQ_KEY, DLQ_OPEN_KEY,
                    ARQ_JOB_PREFIX + job_id, ARQ_IN_PROGRESS_PREFIX + job_id,
                    ARQ_RETRY_PREFIX + job_id, self.queue_name, worker_jobs_key(worker),
                ],
                args=[job_id, worker, now_ms(), crash_cap, self.retention_s],
            )  # fmt: skip
            outcomes[job_id] = _text(answer) or ""
            if outcomes[job_id] == "dead":
                metrics.JOBS_FAILED.labels(kind).inc()
                metrics.JOBS_DEAD_LETTERED.labels(kind).inc()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(WORKERS_KEY, worker)
            pipe.delete(worker_jobs_key(worker))
            await pipe.execute()
        return outcomes

    async def dead_workers(self, silent_s: float) -> list[str]:
        """Workers whose last heartbeat is older than `silent_s`."""
        stale = await self.redis.zrangebyscore(WORKERS_KEY, "-inf", f"({time.time() - silent_s}")
        return [w.decode() for w in stale]

    async def get_dead_letter(self, job_id: str) -> JobRecord | None:
        """The record of a job that failed for good, or None."""
        record = await self.get(job_id)
        return record if record is not None and record.state == JobState.FAILED else None

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
            pipe.delete(record_key(record.id), attempts_key(record.id))
            pipe.zrem(DLQ_KEY, record.id)
            pipe.zrem(DLQ_OPEN_KEY, record.id)
            await pipe.execute()

    async def throughput(self, minutes: int = 60) -> list[dict[str, int]]:
        """Jobs that succeeded and failed per minute, oldest first, ending now."""
        current = now_ms() // 60000
        window = list(range(current - minutes + 1, current + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in window:
                pipe.hgetall(f"{PREFIX}stats:{minute}")
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
        await self._progress(
            keys=[record_key(job_id)],
            args=[progress, now_ms(), stage or "", "1" if stage is not None else ""],
        )
