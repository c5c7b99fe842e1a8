"""The analysis batch job: create one, run its steps, page through its results.

A batch is one job of kind `analysis_batch` whatever its size. Its arguments stay small
(`mode`, `instructions`, `user_id` or the number of documents); its document list and
every document's outcome live in the batch's own Redis keys (`state.py`), and each
analysis in S3 beside the document, as a single analysis's does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from jobs.analysis_batches.economy import cancel_message_batches, economy_step
from jobs.analysis_batches.standard import standard_step
from jobs.analysis_batches.state import OPEN, BatchState, decode_entry
from jobs.claude import Claude
from jobs.documents import DOC_ID_PATTERN, analysis_key, doc_index_key, user_prefix
from jobs.engine import Continue, JobRun, WorkerDeps
from jobs.engine.records import Enqueued, JobRecord, JobState, new_job_id
from jobs.engine.store import JobStore
from jobs.errors import InvalidInput, NotFound
from jobs.storage import Storage

KIND = "analysis_batch"
MAX_DOCUMENTS = 10_000
# How many unknown ids a 422 names (it says how many there were in all).
NAMED_AT_MOST = 100
# The batch's keys outlive an unfinished job's record by this much (a 24-hour wait).
STATE_MARGIN_S = 2 * 24 * 3600
FETCH_CONCURRENCY = 16


def results_url(job_id: str) -> str:
    return f"/v1/analysis-batches/{job_id}/results"


async def unknown_documents(redis: Redis, account: str, doc_ids: list[str]) -> list[str]:
    """The ids that name no document of this account (unknown or another account's)."""
    unknown = [d for d in doc_ids if not DOC_ID_PATTERN.fullmatch(d)]
    valid = [d for d in doc_ids if DOC_ID_PATTERN.fullmatch(d)]
    async with redis.pipeline(transaction=False) as pipe:
        for doc_id in valid:
            pipe.hget(doc_index_key(doc_id), "account")
        owners = await pipe.execute()
    unknown += [d for d, o in zip(valid, owners, strict=True) if o is None or o.decode() != account]
    return unknown


async def create_batch(
    store: JobStore,
    account: str,
    *,
    mode: str,
    instructions: str | None,
    document_ids: list[str] | None = None,
    user_id: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    request_id: str | None = None,
) -> Enqueued:
    """Check the documents and enqueue the batch: its document list first, then the job.

    An id that is unknown or another account's is an `InvalidInput` naming it, and nothing
    is made; so is an Idempotency-Key reused with another body. A batch of a `user_id`
    finds that user's documents when it first runs (enqueueing needs Redis only).
    """
    redis = store.redis
    args: dict[str, Any] = {"mode": mode, "instructions": instructions}
    job_id = new_job_id()
    batch = BatchState(redis, job_id)
    ttl = store.retention_s(KIND) + STATE_MARGIN_S
    if document_ids is not None:
        ids = list(dict.fromkeys(document_ids))
        unknown = await unknown_documents(redis, account, ids)
        if unknown:
            raise InvalidInput(
                f"{len(unknown)} document id(s) name no document of this account: "
                + ", ".join(unknown[:NAMED_AT_MOST]),
                type="unknown_documents",
                document_ids=unknown[:NAMED_AT_MOST],
                unknown_count=len(unknown),
            )
        args["documents"] = len(ids)
        await batch.write_documents(ids, ttl)
    else:
        args["user_id"] = user_id
    try:
        enqueued = await store.create(
            kind=KIND, account=account, args=args, job_id=job_id,
            idempotency_key=idempotency_key, fingerprint=fingerprint, request_id=request_id,
        )  # fmt: skip
    except BaseException:
        await batch.forget()
        raise
    if enqueued.job_id != job_id or enqueued.replayed:
        await batch.forget()
    return enqueued


async def resolve_user_documents(run: JobRun, batch: BatchState, user_id: str) -> None:
    """A `user_id` batch's documents: every document of that user, found in S3 once."""
    ids: list[str] = []
    prefix = f"{user_prefix(run.account, user_id)}documents/"
    async for key in run.deps.storage.list_keys(prefix):
        doc_id = key.rsplit("/", 1)[-1].removesuffix(".json")
        if DOC_ID_PATTERN.fullmatch(doc_id):
            ids.append(doc_id)
    retention = run.deps.store.retention_s(KIND) + STATE_MARGIN_S
    await batch.write_documents(ids, retention)


async def run_analysis_batch(run: JobRun, args: dict[str, Any]) -> dict[str, Any] | Continue:
    """Run one step of an analysis batch: standard (one Messages API call per document,
    in steps under the fair queue and the shared budget) or economy (Message Batches).

    Retries: a document's transient failure is tried again within the batch and one that
    fails for good is counted, not fatal; Claude refusing the service (no key, a refused
    key or model), or a Message Batch refused whole, fails the batch; Redis, S3 and
    Claude being unreachable between documents retry the step as any job's attempt.
    Waiting (for the budget, a Message Batch, its turn) spends no attempt.
    """
    batch = BatchState(run.deps.redis, run.job_id)
    retention = run.deps.store.retention_s(KIND) + STATE_MARGIN_S
    if not await batch.has_documents():
        replayed = run.record.replay_of
        if replayed and await batch.copy_documents(BatchState(run.deps.redis, replayed), retention):
            pass  # a replayed dead letter analyses the documents of the batch it replays
        elif args.get("user_id") is None:
            raise NotFound("the batch's document list has expired", type="batch_expired")
        await resolve_user_documents(run, batch, args["user_id"])
    if args["mode"] == "economy":
        step = await economy_step(run, batch, args.get("instructions"))
    else:
        step = await standard_step(run, batch, args.get("instructions"))
    if step is not None:
        return step
    counts = await batch.counts()
    await batch.expire(run.deps.store.retention_s(KIND))
    return {"mode": args["mode"], **counts, "results_url": results_url(run.job_id)}


async def results_page(
    redis: Redis, storage: Storage, record: JobRecord, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a batch's results, one entry per document in the order given; a
    succeeded entry carries its analysis (read from S3). The cursor is the next position."""
    start = int(cursor) if cursor and cursor.isdigit() else 0
    batch = BatchState(redis, record.id)
    ids = await batch.documents(start, limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    entries = await batch.entries(ids)
    users = await _users(redis, ids)
    semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def entry_of(doc_id: str, raw: bytes | None, user: str | None) -> dict[str, Any]:
        shown = decode_entry(raw)
        if shown is None:
            ended = record.state in (JobState.CANCELLED, JobState.FAILED)
            return {"document_id": doc_id, "state": "cancelled" if ended else "pending"}
        if shown["state"] == "succeeded" and user is not None:
            key = analysis_key(record.account, user, doc_id, record.id)
            async with semaphore:
                try:
                    stored = json.loads(await storage.get_bytes(key))
                    shown["analysis"] = stored.get("analysis")
                except NotFound:
                    shown["analysis"] = None
        return {"document_id": doc_id, **shown}

    data = await asyncio.gather(
        *(entry_of(d, e, u) for d, e, u in zip(ids, entries, users, strict=True))
    )
    return list(data), str(start + limit) if more else None


async def _users(redis: Redis, doc_ids: list[str]) -> list[str | None]:
    async with redis.pipeline(transaction=False) as pipe:
        for doc_id in doc_ids:
            pipe.hget(doc_index_key(doc_id), "user_id")
        raw = await pipe.execute()
    return [r.decode() if r is not None else None for r in raw]


async def document_result(redis: Redis, job_id: str, doc_id: str) -> dict[str, Any] | None:
    """A document's result in a batch (its latest analysis), without the text."""
    (raw,) = await BatchState(redis, job_id).entries([doc_id])
    return decode_entry(raw)


async def batch_overview(redis: Redis, job_id: str, failures: int = 50) -> dict[str, Any]:
    """A batch's counts so far and its first `failures` failed documents (operators)."""
    batch = BatchState(redis, job_id)
    shown: list[dict[str, Any]] = []
    async for doc_id, raw in redis.hscan_iter(batch.results, count=1000):
        if len(shown) >= failures:
            break
        entry = decode_entry(raw)
        if entry is not None and entry["state"] == "failed":
            shown.append({"document_id": doc_id.decode(), **entry["error"]})
    return {**await batch.counts(), "failures": shown}


async def cancel_abandoned(deps: WorkerDeps) -> int:
    """Cancel the Message Batches of batch jobs that ended without reading them (a cancel,
    a failure): a worker chore, since a job cancelled while it waits runs no more."""
    cancelled = 0
    claude = deps.resources.get(Claude)
    for member in await deps.redis.zrange(OPEN, 0, -1):
        job_id = member.decode()
        state = await deps.store.state(job_id)
        if state is None or state == JobState.SUCCEEDED:
            await deps.redis.zrem(OPEN, job_id)
        elif state in (JobState.CANCELLED, JobState.FAILED):
            batch = BatchState(deps.redis, job_id)
            cancelled += len(await cancel_message_batches(claude.client if claude else None, batch))
            await deps.redis.zrem(OPEN, job_id)
    return cancelled
