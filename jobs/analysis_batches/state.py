"""An analysis batch's state in Redis: a few compact keys per batch, no job per document.

    abatch:<job>:docs          list: the document ids, in the order given (no repeats)
    abatch:<job>:results       hash: document id -> its result, compact JSON:
                               ["s", model, input, output, cache_read, cache_creation]
                               or ["f", error type, message]
    abatch:<job>:meta          hash: total, succeeded, failed, usage:<name>, the standard
                               mode's cursor, the economy mode's round, phase and batches
    abatch:<job>:retry         zset: (standard) documents to try again -> due ms
    abatch:<job>:tries         hash: document id -> failed tries (standard) or its last
                               error (economy, `err:<id>`)
    abatch:<job>:answer:<doc>  string: a paid answer kept while S3 would not take it
    abatch:mb:<msgbatch id>    string: the batch job a Message Batch belongs to
    abatch:submitting          string: the batch job submitting a Message Batch now (a lock)
    abatch:open                zset: batch jobs whose Message Batches may still run -> ms

The analyses themselves go to S3, at the document's analysis key for the batch's job id, as
a single analysis's do; Redis holds a document's outcome and usage only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from jobs.analyses import USAGE_FIELDS, economy_usage_key, usage_key
from jobs.documents import doc_index_key
from jobs.engine.keys import domain_key
from jobs.engine.scripts import LuaScript

CHUNK = 1000
SUBMIT_LOCK = domain_key("abatch", "submitting")
OPEN = domain_key("abatch", "open")


@dataclass(frozen=True, slots=True)
class RecordKeys:
    results: str
    meta: str
    doc: str
    usage: str
    economy_usage: str


@dataclass(frozen=True, slots=True)
class RecordArgs:
    doc_id: str
    job_id: str
    entry_json: str
    outcome: str
    model: str
    economy: str
    increments: tuple[str | int, ...] = ()


RECORD = LuaScript("jobs.analysis_batches", "record", RecordKeys, RecordArgs)


def claimed_key(message_batch_id: str) -> str:
    """Which batch job a Message Batch belongs to (so a recovery never adopts another's)."""
    return domain_key("abatch", "mb", message_batch_id)


def succeeded_entry(model: str, usage: dict[str, int]) -> str:
    return json.dumps(["s", model, *(usage.get(name, 0) for name in USAGE_FIELDS)])


def failed_entry(error: dict[str, Any]) -> str:
    return json.dumps(["f", error.get("type", "error"), error.get("message", "")])


def decode_entry(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored result as the results page shows it (without the analysis text)."""
    if raw is None:
        return None
    entry = json.loads(raw)
    if entry[0] == "s":
        return {
            "state": "succeeded",
            "model": entry[1],
            "usage": dict(zip(USAGE_FIELDS, entry[2:], strict=True)),
        }
    return {"state": "failed", "error": {"type": entry[1], "message": entry[2]}}


class BatchState:
    """The Redis state of one analysis batch (`job_id`)."""

    def __init__(self, redis: Redis, job_id: str) -> None:
        self.redis = redis
        self.job_id = job_id
        self.docs = domain_key("abatch", job_id, "docs")
        self.results = domain_key("abatch", job_id, "results")
        self.meta = domain_key("abatch", job_id, "meta")
        self.retry = domain_key("abatch", job_id, "retry")
        self.tries = domain_key("abatch", job_id, "tries")

    def answer_key(self, doc_id: str) -> str:
        return domain_key("abatch", self.job_id, "answer", doc_id)

    async def write_documents(self, doc_ids: list[str], ttl_s: int) -> None:
        """Store the document list and its total (before the job is enqueued)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.docs)
            for start in range(0, len(doc_ids), CHUNK):
                pipe.rpush(self.docs, *doc_ids[start : start + CHUNK])
            pipe.hset(self.meta, "total", len(doc_ids))
            pipe.expire(self.docs, ttl_s)
            pipe.expire(self.meta, ttl_s)
            await pipe.execute()

    async def copy_documents(self, other: BatchState, ttl_s: int) -> bool:
        """Take another batch's document list (a replay); False when it has none left."""
        if not await self.redis.copy(other.docs, self.docs, replace=True):
            return False
        await self.redis.hset(self.meta, "total", await self.redis.llen(self.docs))
        await self.redis.expire(self.docs, ttl_s)
        await self.redis.expire(self.meta, ttl_s)
        return True

    async def forget(self) -> None:
        """Delete the batch's state (a POST that made no job)."""
        await self.redis.delete(self.docs, self.results, self.meta, self.retry, self.tries)

    async def expire(self, ttl_s: int) -> None:
        """Keep the state as long as the finished job's record."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (self.docs, self.results, self.meta, self.retry, self.tries):
                pipe.expire(key, ttl_s)
            await pipe.execute()

    async def total(self) -> int:
        return int(await self.redis.hget(self.meta, "total") or 0)

    async def has_documents(self) -> bool:
        return bool(await self.redis.exists(self.docs))

    async def documents(self, start: int, count: int) -> list[str]:
        """`count` document ids from position `start` of the list."""
        if count <= 0:
            return []
        raw = await self.redis.lrange(self.docs, start, start + count - 1)
        return [r.decode() for r in raw]

    async def entries(self, doc_ids: list[str]) -> list[bytes | None]:
        """The stored results of these documents (None: none yet)."""
        if not doc_ids:
            return []
        return list(await self.redis.hmget(self.results, doc_ids))

    async def unresolved(self) -> list[str]:
        """The documents without a result yet, in list order."""
        total = await self.total()
        missing: list[str] = []
        for start in range(0, total, CHUNK):
            ids = await self.documents(start, CHUNK)
            missing += [d for d, e in zip(ids, await self.entries(ids), strict=True) if e is None]
        return missing

    async def counts(self) -> dict[str, Any]:
        """total, succeeded, failed and usage (tokens by name) so far."""
        raw: dict[str, int] = {}
        for name, value in (await self.redis.hgetall(self.meta)).items():
            if value.lstrip(b"-").isdigit():
                raw[name.decode()] = int(value)
        return {
            "total": raw.get("total", 0),
            "succeeded": raw.get("succeeded", 0),
            "failed": raw.get("failed", 0),
            "usage": {name: raw.get(f"usage:{name}", 0) for name in USAGE_FIELDS},
        }

    async def record(
        self,
        account: str,
        doc_id: str,
        *,
        usage: dict[str, int] | None = None,
        model: str = "",
        error: dict[str, Any] | None = None,
        economy: bool = False,
    ) -> bool:
        """Record a document's result once (a success with its model and usage, or a
        failure with its error); False when it already had one."""
        increments: list[str | int] = []
        for name, tokens in (usage or {}).items():
            increments += [name, tokens]
        entry = failed_entry(error) if error is not None else succeeded_entry(model, usage or {})
        recorded = await RECORD(
            self.redis,
            RecordKeys(
                results=self.results,
                meta=self.meta,
                doc=doc_index_key(doc_id),
                usage=usage_key(account),
                economy_usage=economy_usage_key(account),
            ),
            RecordArgs(
                doc_id=doc_id,
                job_id=self.job_id,
                entry_json=entry,
                outcome="failed" if error is not None else "succeeded",
                model=model,
                economy="1" if economy else "",
                increments=tuple(increments),
            ),
        )
        return bool(recorded)

    async def get_meta(self, name: str) -> str | None:
        value = await self.redis.hget(self.meta, name)
        return value.decode() if value is not None else None

    async def set_meta(self, **fields: str | int) -> None:
        await self.redis.hset(self.meta, mapping=fields)  # type: ignore[arg-type]

    async def del_meta(self, *names: str) -> None:
        await self.redis.hdel(self.meta, *names)
