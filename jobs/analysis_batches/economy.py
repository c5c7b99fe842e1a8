"""The economy mode: Claude's Message Batches API, half the price, in rounds.

A round submits every document without a result, split into Message Batches of at most
`ANALYSIS_BATCH_MAX_REQUESTS` requests and `ANALYSIS_BATCH_MAX_BYTES` bytes; the job then
looks at them with a backoff (`ANALYSIS_BATCH_POLL_SECONDS`, doubling up to
`ANALYSIS_BATCH_POLL_MAX_SECONDS`) and between two looks is back in the queue (`Continue`),
holding no worker slot. Once every Message Batch of the round has ended, their results are
read: a success is stored and counted; a permanent error is counted in `failed`; an
`errored` entry with a transient error (`api_error`, `overloaded_error`, ...), an `expired`
or `canceled` one, or one missing from the results, goes into the next round, up to
`JOB_MAX_TRIES` rounds.

No Message Batch is ever submitted twice. Submissions are serialised by a lock in Redis
(`abatch:submitting`), and before `create` the job records a `submitting` marker (round,
chunk, number of requests, time); after it, the Message Batch's id in the same step that
clears the marker. A run that finds a marker left by a crash lists the Message Batches
created since the marker (newest first), and adopts the one with that many requests that
no batch job has claimed (`abatch:mb:<id>`); only when there is none does it submit again.
Every `custom_id` is `<job>-<document>` (without their prefixes), and results are taken
only for this job's own documents, so even a wrongly adopted batch could add nothing false:
its documents would simply go into the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch

from jobs.analyses import build_request, save_analysis
from jobs.analysis_batches.state import OPEN, SUBMIT_LOCK, BatchState, claimed_key
from jobs.claude import Claude, translate_claude_error
from jobs.documents import Documents
from jobs.engine import Continue, JobRun
from jobs.errors import InvalidInput, NotFound
from jobs.settings import Settings

# Errors of an entry that another try may not have: it goes into the next round.
TRANSIENT_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})
# A crash's Message Batch is looked for among those created this long before its marker.
CLOCK_SKEW_S = 120.0
CLAIM_TTL_S = 30 * 24 * 3600
LOAD_CONCURRENCY = 16
RECORD_CONCURRENCY = 32


def custom_id(job_id: str, doc_id: str) -> str:
    return f"{job_id.removeprefix('job_')}-{doc_id.removeprefix('doc_')}"


def document_of(job_id: str, value: str) -> str | None:
    """The document a custom_id names, if it is one of this job's."""
    job, _, doc = value.partition("-")
    return f"doc_{doc}" if job == job_id.removeprefix("job_") and doc else None


def gone(doc_id: str) -> dict[str, str]:
    return {"type": "document_not_found", "message": f"document {doc_id} no longer exists"}


def client_of(run: JobRun) -> AsyncAnthropic:
    client = run.deps.get(Claude).client
    if client is None:
        raise InvalidInput(
            "ANTHROPIC_API_KEY is not set on the worker: set it and replay this job",
            type="configuration_error",
        )
    return client


async def _claude(call: Any, model: str) -> Any:
    """Await an SDK call, its errors translated into the service's error tree."""
    try:
        return await call
    except anthropic.AnthropicError as exc:
        raise translate_claude_error(exc, model) from exc


class Economy:
    """One step of an economy batch."""

    def __init__(self, run: JobRun, batch: BatchState, instructions: str | None) -> None:
        self.run = run
        self.batch = batch
        self.instructions = instructions
        self.settings: Settings = run.deps.settings
        self.redis = run.deps.redis
        self.client = client_of(run)
        self.model = self.settings.analysis_model
        self.documents = Documents(self.redis, run.deps.storage, self.settings.max_document_bytes)
        budget = min(self.settings.analysis_batch_step_seconds, run.time_left() / 2)
        self.deadline = time.monotonic() + budget

    def short_of_time(self) -> bool:
        """Whether this step has had its time (it always gets through one chunk or group)."""
        return time.monotonic() > self.deadline

    async def step(self) -> Continue | None:
        """Submit, wait or read, as the round stands; None once every document has a result."""
        round_no = int(await self.batch.get_meta("round") or 0)
        if round_no == 0:
            round_no = 1
            await self.batch.set_meta(round=1, phase="submit")
        if await self.batch.get_meta("phase") == "submit":
            waiting = await self.submit(round_no)
            if waiting is not None:
                return waiting
            await self.batch.set_meta(phase="wait", polls=0)
        ids = await self.round_batches(round_no)
        batches = await asyncio.gather(
            *(_claude(self.client.messages.batches.retrieve(i), self.model) for i in ids)
        )
        if any(b.processing_status != "ended" for b in batches):
            polls = await self.redis.hincrby(self.batch.meta, "polls", 1)
            first, most = (self.settings.analysis_batch_poll_seconds,
                           self.settings.analysis_batch_poll_max_seconds)  # fmt: skip
            return Continue(min(most, first * 2 ** (polls - 1)), "waiting_for_message_batch")
        for message_batch in batches:
            if await self.batch.get_meta(f"read:{message_batch.id}"):
                continue
            if not await self.read(message_batch.id, round_no):
                return Continue(0.0, "reading_results")
            await self.batch.set_meta(**{f"read:{message_batch.id}": 1})
        await self.report_progress()
        unresolved = await self.batch.unresolved()
        if not unresolved:
            await self.redis.zrem(OPEN, self.run.job_id)
            return None
        if round_no >= self.settings.job_max_tries:
            for doc_id in unresolved:
                error = await self.last_error(doc_id)
                await self.batch.record(self.run.account, doc_id, error=error)
            await self.redis.zrem(OPEN, self.run.job_id)
            return None
        await self.batch.set_meta(round=round_no + 1, phase="submit")
        return Continue(0.0, "resubmitting")

    async def round_batches(self, round_no: int) -> list[str]:
        chunks = int(await self.batch.get_meta(f"r{round_no}:chunks") or 0)
        found = [await self.batch.get_meta(f"r{round_no}:c{n}") for n in range(chunks)]
        return [i for i in found if i]

    async def report_progress(self) -> None:
        counts = await self.batch.counts()
        total = counts["total"] or 1
        await self.run.progress((counts["succeeded"] + counts["failed"]) / total, "reading_results")

    # -- submitting ------------------------------------------------------------------------

    async def lock(self) -> bool:
        """Take the submission lock (this job may take back its own, left by a crash)."""
        ttl_ms = int((self.settings.claude_timeout_seconds + 30) * 1000)
        if await self.redis.set(SUBMIT_LOCK, self.run.job_id, nx=True, px=ttl_ms):
            return True
        holder = await self.redis.get(SUBMIT_LOCK)
        if holder is not None and holder.decode() == self.run.job_id:
            await self.redis.pexpire(SUBMIT_LOCK, ttl_ms)
            return True
        return False

    async def unlock(self) -> None:
        holder = await self.redis.get(SUBMIT_LOCK)
        if holder is not None and holder.decode() == self.run.job_id:
            await self.redis.delete(SUBMIT_LOCK)

    async def submit(self, round_no: int) -> Continue | None:
        """Submit the round's documents chunk by chunk; a Continue when this step must stop
        before the round is all submitted."""
        if not await self.lock():
            return Continue(1.0, "waiting_to_submit")
        try:
            pending = await self.batch.unresolved()
            marker = await self.batch.get_meta("submitting")
            if marker is not None:
                await self.recover(json.loads(marker), round_no)
            position = int(await self.batch.get_meta(f"r{round_no}:next") or 0)
            chunk = int(await self.batch.get_meta(f"r{round_no}:chunks") or 0)
            while position < len(pending):
                if position > 0 and self.short_of_time():
                    return Continue(0.0, "submitting")
                end, requests = await self.build(pending, position, round_no)
                marker = json.dumps({"round": round_no, "chunk": chunk, "end": end,
                                     "count": len(requests), "at": time.time()})  # fmt: skip
                await self.batch.set_meta(submitting=marker)
                if requests:
                    created = await _claude(
                        self.client.messages.batches.create(requests=requests), self.model
                    )
                    await self.claim(created.id, round_no, chunk, end)
                    chunk += 1
                else:  # every document of the chunk was gone: nothing to send
                    await self.batch.set_meta(**{f"r{round_no}:next": end})
                    await self.batch.del_meta("submitting")
                position = end
            return None
        finally:
            await self.unlock()

    async def claim(self, message_batch_id: str, round_no: int, chunk: int, end: int) -> None:
        """Record a submitted Message Batch as this job's, and clear the marker, at once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(claimed_key(message_batch_id), self.run.job_id, ex=CLAIM_TTL_S)
            pipe.hset(self.batch.meta, mapping={
                f"r{round_no}:c{chunk}": message_batch_id,
                f"r{round_no}:chunks": chunk + 1,
                f"r{round_no}:next": end,
            })  # fmt: skip
            pipe.hdel(self.batch.meta, "submitting")
            pipe.zadd(OPEN, {self.run.job_id: int(time.time() * 1000)})
            await pipe.execute()

    async def recover(self, marker: dict[str, Any], round_no: int) -> None:
        """A run crashed between marking a submission and recording it: adopt the Message
        Batch it made, if there is one, so that nothing is submitted twice."""
        since = datetime.fromtimestamp(marker["at"] - CLOCK_SKEW_S, UTC)
        found: MessageBatch | None = None
        async for candidate in self.client.messages.batches.list(limit=100):
            if candidate.created_at < since:
                break
            counts = candidate.request_counts
            total = (counts.processing + counts.succeeded + counts.errored + counts.canceled
                     + counts.expired)  # fmt: skip
            if total == marker["count"] and not await self.redis.exists(claimed_key(candidate.id)):
                found = candidate  # newest first: the last one seen is the earliest
        if found is not None and marker["round"] == round_no:
            await self.claim(found.id, round_no, marker["chunk"], marker["end"])
        else:
            await self.batch.del_meta("submitting")

    async def build(
        self, pending: list[str], position: int, round_no: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """The requests of the chunk that starts at `position`, within the size limits, and
        where the next chunk starts."""
        limit_n = self.settings.analysis_batch_max_requests
        limit_bytes = self.settings.analysis_batch_max_bytes - 1024
        requests: list[dict[str, Any]] = []
        size = 0
        end = position
        while end < len(pending) and len(requests) < limit_n:
            ids = pending[end : end + LOAD_CONCURRENCY]
            loaded = await asyncio.gather(*(self.request_for(d) for d in ids))
            for request in loaded:
                if len(requests) >= limit_n:
                    break
                if request is not None:
                    entry_size = len(json.dumps(request)) + 2
                    if requests and size + entry_size > limit_bytes:
                        return end, requests
                    requests.append(request)
                    size += entry_size
                end += 1
        return end, requests

    async def request_for(self, doc_id: str) -> dict[str, Any] | None:
        meta = await self.documents.get(doc_id)
        if meta is None or meta.account != self.run.account:
            await self.redis.hset(self.batch.tries, f"err:{doc_id}", json.dumps(gone(doc_id)))
            return None
        try:
            document = await self.documents.load(meta)
        except NotFound:
            await self.redis.hset(self.batch.tries, f"err:{doc_id}", json.dumps(gone(doc_id)))
            return None
        params = build_request(self.settings, document, self.instructions)
        return {"custom_id": custom_id(self.run.job_id, doc_id), "params": params}

    # -- reading ---------------------------------------------------------------------------

    async def read(self, message_batch_id: str, round_no: int) -> bool:
        """Take in an ended Message Batch's results; False when time ran short first (the
        next step reads it again, skipping what is already recorded)."""
        decoder = await _claude(self.client.messages.batches.results(message_batch_id), self.model)
        group: list[Any] = []
        async for entry in decoder:
            group.append(entry)
            if len(group) >= RECORD_CONCURRENCY:
                await self.take(group, round_no)
                group = []
                if self.short_of_time():
                    return False
        await self.take(group, round_no)
        return True

    async def take(self, entries: list[Any], round_no: int) -> None:
        mine = [(document_of(self.run.job_id, e.custom_id), e) for e in entries]
        owned = [(d, e) for d, e in mine if d is not None]
        recorded = await self.batch.entries([d for d, _ in owned])
        todo = [(d, e) for (d, e), r in zip(owned, recorded, strict=True) if r is None]
        await asyncio.gather(*(self.take_one(d, e.result, round_no) for d, e in todo))

    async def take_one(self, doc_id: str, result: Any, round_no: int) -> None:
        account = self.run.account
        if result.type == "succeeded":
            message = result.message
            meta = await self.documents.get(doc_id)
            if meta is None:
                await self.batch.record(account, doc_id, error=gone(doc_id))
                return
            usage = {
                "input_tokens": message.usage.input_tokens,
                "output_tokens": message.usage.output_tokens,
                "cache_read_input_tokens": message.usage.cache_read_input_tokens or 0,
                "cache_creation_input_tokens": message.usage.cache_creation_input_tokens or 0,
            }
            text = "".join(block.text for block in message.content if block.type == "text")
            analysis = {"document_id": doc_id, "model": message.model, "analysis": text,
                        "usage": usage}  # fmt: skip
            await save_analysis(self.run.deps.storage, meta, self.run.job_id, analysis,
                                self.instructions)  # fmt: skip
            await self.batch.record(account, doc_id, usage=usage, model=message.model, economy=True)
            return
        if result.type == "errored":
            error_type = result.error.error.type
            error = {"type": f"claude_{error_type}", "message": result.error.error.message}
            if error_type not in TRANSIENT_ERRORS:
                await self.batch.record(account, doc_id, error=error)
                return
        elif result.type == "expired":
            error = {"type": "message_batch_expired",
                     "message": "the Message Batch expired before this request ran"}  # fmt: skip
        else:
            error = {"type": "message_batch_canceled",
                     "message": "the request was canceled before it ran"}  # fmt: skip
        await self.redis.hset(self.batch.tries, f"err:{doc_id}", json.dumps(error))

    async def last_error(self, doc_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(self.batch.tries, f"err:{doc_id}")
        if raw is not None:
            return json.loads(raw)  # type: ignore[no-any-return]
        return {"type": "message_batch_missing", "message": "no result came back for it"}


async def economy_step(run: JobRun, batch: BatchState, instructions: str | None) -> Continue | None:
    """Run one step of an economy batch; None once every document has a result."""
    return await Economy(run, batch, instructions).step()


async def cancel_message_batches(client: AsyncAnthropic | None, batch: BatchState) -> list[str]:
    """Cancel the Message Batches of a batch that may still run; their ids."""
    cancelled = []
    round_no = int(await batch.get_meta("round") or 0)
    chunks = int(await batch.get_meta(f"r{round_no}:chunks") or 0)
    for n in range(chunks):
        message_batch_id = await batch.get_meta(f"r{round_no}:c{n}")
        if client is None or not message_batch_id:
            continue
        if await batch.get_meta(f"read:{message_batch_id}"):
            continue
        with contextlib.suppress(anthropic.BadRequestError):  # it has ended already
            await client.messages.batches.cancel(message_batch_id)
        cancelled.append(message_batch_id)
    return cancelled
