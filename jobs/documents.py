"""Documents: stored in S3 (the system of record), indexed in Redis for lookups by id.

S3 keys put each user's objects under one prefix, so an export lists a user's
documents without scanning anyone else's:

    accounts/<account>/users/<user>/documents/<doc id>.json       text and metadata
    accounts/<account>/users/<user>/analyses/<doc id>/<job id>.json  one per analysis job
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from ulid import ULID

from jobs.engine import keys
from jobs.engine.records import now_ms
from jobs.errors import PayloadTooLarge
from jobs.storage import Storage

DOC_ID_PATTERN = re.compile(r"doc_[0-9A-HJKMNP-TV-Z]{26}")
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"


def doc_index_key(doc_id: str) -> str:
    return keys.domain_key("doc", doc_id)


def user_prefix(account: str, user_id: str) -> str:
    return f"accounts/{account}/users/{user_id}/"


def document_key(account: str, user_id: str, doc_id: str) -> str:
    return f"{user_prefix(account, user_id)}documents/{doc_id}.json"


def analyses_prefix(account: str, user_id: str, doc_id: str) -> str:
    return f"{user_prefix(account, user_id)}analyses/{doc_id}/"


def analysis_key(account: str, user_id: str, doc_id: str, job_id: str) -> str:
    """Fixed per job: a rerun of the job overwrites its analysis, never adds one."""
    return f"{analyses_prefix(account, user_id, doc_id)}{job_id}.json"


@dataclass
class DocumentMeta:
    """What Redis keeps about a document (its text lives in S3)."""

    id: str
    account: str
    user_id: str
    title: str | None
    size_bytes: int
    created_at: int
    latest_analysis_job: str | None = None

    @property
    def key(self) -> str:
        return document_key(self.account, self.user_id, self.id)


class Documents:
    """Create and read documents."""

    def __init__(self, redis: Redis, storage: Storage, max_bytes: int) -> None:
        self.redis = redis
        self.storage = storage
        self.max_bytes = max_bytes

    async def create(
        self, account: str, user_id: str, title: str | None, text: str
    ) -> DocumentMeta:
        """Store the text in S3, then index it; `PayloadTooLarge` above MAX_DOCUMENT_BYTES."""
        size = len(text.encode())
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"the document is {size} bytes; the limit is {self.max_bytes} (MAX_DOCUMENT_BYTES)",
                limit_bytes=self.max_bytes,
            )
        meta = DocumentMeta(
            id=f"doc_{ULID()}",
            account=account,
            user_id=user_id,
            title=title,
            size_bytes=size,
            created_at=now_ms(),
        )
        body = {k: v for k, v in asdict(meta).items() if k not in ("latest_analysis_job",)}
        await self.storage.put_bytes(
            meta.key, json.dumps({**body, "text": text}).encode(), "application/json"
        )
        await self.redis.hset(
            doc_index_key(meta.id),
            mapping={k: v for k, v in asdict(meta).items() if v is not None},  # type: ignore[arg-type]
        )
        return meta

    async def get(self, doc_id: str) -> DocumentMeta | None:
        """The document's metadata, or None."""
        if not DOC_ID_PATTERN.fullmatch(doc_id):
            return None
        raw = await self.redis.hgetall(doc_index_key(doc_id))
        if not raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return DocumentMeta(
            id=h["id"],
            account=h["account"],
            user_id=h["user_id"],
            title=h.get("title"),
            size_bytes=int(h["size_bytes"]),
            created_at=int(h["created_at"]),
            latest_analysis_job=h.get("latest_analysis_job"),
        )

    async def load(self, meta: DocumentMeta) -> dict[str, Any]:
        """The stored document, text included."""
        return json.loads(await self.storage.get_bytes(meta.key))

    async def set_latest_analysis(self, doc_id: str, job_id: str) -> None:
        """Point the document at its newest analysis job (only while it exists)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(doc_index_key(doc_id))
            if await pipe.exists(doc_index_key(doc_id)):
                pipe.multi()
                pipe.hset(doc_index_key(doc_id), "latest_analysis_job", job_id)
                await pipe.execute()

    async def exists(self, doc_id: str) -> bool:
        return bool(await self.redis.exists(doc_index_key(doc_id)))

    async def delete(self, meta: DocumentMeta) -> int:
        """Delete a document: its index entry first (it is gone for every reader at once),
        then its text and every analysis of it in S3. Returns how many objects went.
        An export already written keeps its copy until the export expires."""
        await self.redis.delete(doc_index_key(meta.id))
        objects = [meta.key]
        prefix = analyses_prefix(meta.account, meta.user_id, meta.id)
        objects += [key async for key in self.storage.list_keys(prefix)]
        await self.storage.delete_many(objects)
        return len(objects)
