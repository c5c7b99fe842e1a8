"""The standard mode: each document is its own Messages API call, in steps.

One run of the batch's job is a step: up to `ANALYSIS_BATCH_CONCURRENCY` documents at a
time, for up to `ANALYSIS_BATCH_STEP_SECONDS`, every call through the worker's `Claude`
(its local cap and the shared budget). Then the job goes back to the fair queue
(`Continue`), so other accounts' work takes its turn between two steps, and a wait for the
budget frees the worker's slot. The cursor and every document's result are in Redis, so a
step cut short (a crash, a deploy) loses nothing but the calls it had in flight: the last
step finds the documents without a result and tries them again.

A document's transient failure (Claude's 5xx, a timeout, S3) is tried again after the
job's backoff, up to `JOB_MAX_TRIES` tries; a permanent one (the document was deleted, too
long for the model, a bad request) is counted in `failed`. Claude refusing the service
itself (no API key, a refused key or model) fails the whole batch: no document could pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jobs.analyses import build_request, save_analysis, usage_of, while_paid_answer_in_memory
from jobs.analysis_batches.state import BatchState
from jobs.claude import Claude
from jobs.documents import Documents
from jobs.engine import Continue, HandBack, JobRun
from jobs.engine.records import now_ms
from jobs.engine.retry import INFRASTRUCTURE_ERROR, as_service_error, full_jitter
from jobs.errors import ServiceError

# Claude refusing the service rather than a document: the batch fails, no document could pass.
FATAL_TYPES = frozenset(
    {"configuration_error", "claude_authentication", "claude_permission", "claude_not_found"}
)


class Step:
    """One step of a standard batch: feeds documents to a pool of calls until time is up."""

    def __init__(self, run: JobRun, batch: BatchState, instructions: str | None) -> None:
        self.run = run
        self.batch = batch
        self.instructions = instructions
        deps = run.deps
        self.settings = deps.settings
        self.redis = deps.redis
        self.claude = deps.get(Claude)
        self.documents = Documents(deps.redis, deps.storage, self.settings.max_document_bytes)
        budget = min(self.settings.analysis_batch_step_seconds, run.time_left() / 2)
        self.deadline = time.monotonic() + budget
        self.buffer: list[str] = []
        self.taking = asyncio.Lock()
        self.hold_s: float | None = None
        self.done = 0

    def open(self) -> bool:
        return self.hold_s is None and time.monotonic() < self.deadline

    async def take(self) -> str | None:
        """The next document: a due retry first, then the next one of the list."""
        async with self.taking:
            if not self.buffer:
                self.buffer = await self._next_few()
                self.buffer.reverse()
            return self.buffer.pop() if self.buffer else None

    async def _next_few(self) -> list[str]:
        want = self.settings.analysis_batch_concurrency
        due = await self.redis.zrangebyscore(self.batch.retry, "-inf", now_ms(), 0, want)
        if due:
            await self.redis.zrem(self.batch.retry, *due)
            return [d.decode() for d in due]
        total = await self.batch.total()
        end = await self.redis.hincrby(self.batch.meta, "next", want)
        return await self.batch.documents(end - want, min(want, total - (end - want)))

    async def put_back(self, doc_ids: list[str], due: int) -> None:
        if doc_ids:
            await self.redis.zadd(self.batch.retry, dict.fromkeys(doc_ids, due))

    async def pool_worker(self) -> None:
        while self.open() and (doc_id := await self.take()) is not None:
            await self.analyse(doc_id)

    async def analyse(self, doc_id: str) -> None:
        """Analyse one document and record its result, or schedule its next try."""
        run = self.run
        try:
            result = await self._answer(doc_id)
        except HandBack as back:
            self.hold_s = max(self.hold_s or 0.0, back.defer_s)
            await self.put_back([doc_id], now_ms())
            return
        except Exception as exc:
            error = as_service_error(exc)
            if error.type == INFRASTRUCTURE_ERROR or error.type in FATAL_TYPES:
                raise
            await self._failed(doc_id, error)
            return
        if result is None:
            return
        # Until it is recorded the paid answer is only in this process (and in S3, where the
        # next step would not look): through a Redis failover, wait rather than buy it again.
        await while_paid_answer_in_memory(run, lambda: self._record(doc_id, result))
        self.done += 1

    async def _record(self, doc_id: str, result: dict[str, Any]) -> None:
        batch = self.batch
        await batch.record(self.run.account, doc_id, usage=result["usage"], model=result["model"])
        await self.redis.delete(batch.answer_key(doc_id))

    async def _answer(self, doc_id: str) -> dict[str, Any] | None:
        run = self.run
        meta = await self.documents.get(doc_id)
        if meta is None or meta.account != run.account:
            error = {"type": "document_not_found", "message": f"document {doc_id} no longer exists"}
            await self.batch.record(run.account, doc_id, error=error)
            self.done += 1
            return None
        kept = await self.redis.get(self.batch.answer_key(doc_id))
        if kept is not None:
            result: dict[str, Any] = json.loads(kept)
        else:
            document = await self.documents.load(meta)
            request = build_request(self.settings, document, self.instructions)
            message = await self.claude.create_message(request, run.time_left)
            text = "".join(block.text for block in message.content if block.type == "text")
            result = {"document_id": doc_id, "model": message.model, "analysis": text,
                      "usage": usage_of(message)}  # fmt: skip
        try:
            await save_analysis(run.deps.storage, meta, run.job_id, result, self.instructions)
        except Exception:
            # Paid for: kept, so the next try stores it without asking Claude again.
            ttl = self.settings.job_retention_seconds
            await self.redis.set(self.batch.answer_key(doc_id), json.dumps(result), ex=ttl)
            raise
        return result

    async def _failed(self, doc_id: str, error: ServiceError) -> None:
        tries = await self.redis.hincrby(self.batch.tries, doc_id, 1)
        if error.retryable and tries < self.settings.job_max_tries:
            defer, _ = full_jitter(tries, self.settings, self.run.deps.rng)
            retry_after = getattr(error, "retry_after", None) or 0.0
            await self.put_back([doc_id], now_ms() + int(max(defer, retry_after) * 1000))
            return
        await self.batch.record(self.run.account, doc_id, error=error.as_error())
        self.done += 1


async def standard_step(
    run: JobRun, batch: BatchState, instructions: str | None
) -> Continue | None:
    """Run one step of a standard batch; None once every document has a result."""
    step = Step(run, batch, instructions)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(run.deps.settings.analysis_batch_concurrency):
                group.create_task(step.pool_worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    await step.put_back(step.buffer, now_ms())
    counts = await batch.counts()
    finished = counts["succeeded"] + counts["failed"]
    total = counts["total"]
    await run.progress(finished / total if total else 1.0, "analysing")
    if finished >= total:
        return None
    if step.hold_s is not None:
        return Continue(step.hold_s, "waiting_for_claude_budget")
    cursor = int(await batch.get_meta("next") or 0)
    if cursor >= total and not await run.deps.redis.zcard(batch.retry):
        # The list is done, yet some documents have no result (a step cut short): again.
        await step.put_back(await batch.unresolved(), now_ms())
    first = await run.deps.redis.zrange(batch.retry, 0, 0, withscores=True)
    if cursor >= total and first:
        return Continue(max(0.0, (first[0][1] - now_ms()) / 1000), "retrying_documents")
    return Continue(0.0, "analysing")
