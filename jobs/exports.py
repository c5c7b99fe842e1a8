"""User-data exports: every document of a user with its latest analysis, streamed to S3.

The archive is written with a multipart upload as it is built (parts of
`EXPORT_PART_BYTES`, at least 5 MiB), so a worker's memory does not grow with
the export. Its key is fixed by the job (`exports/<account>/<job id>.<ext>`), so
a rerun replaces it. A failure, a cancellation or the soft time limit aborts
the upload, and a rerun first aborts the upload an earlier, crashed attempt
left behind; when S3 itself is down at that moment, a janitor in every worker
aborts it later, once the job has ended: no partial archive is ever visible and
no parts are orphaned.

`zip` holds `documents/<id>.json` and `manifest.json` (SHA-256 per entry);
`ndjson` is JSON lines, one document per line, stored gzip-compressed with
`Content-Encoding: gzip`, so a plain HTTP GET of its download URL reads NDJSON.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobs import metrics
from jobs.documents import Documents, analysis_key, user_prefix
from jobs.errors import NotFound
from jobs.records import PREFIX, JobStore, record_key, rfc3339
from jobs.runner import JobKind, JobRun
from jobs.storage import Storage, translate_s3_error
from jobs.zipstream import ZipStream

# format: (key extension, Content-Type, Content-Encoding)
FORMATS: dict[str, tuple[str, str, str | None]] = {
    "zip": ("zip", "application/zip", None),
    "ndjson": ("ndjson.gz", "application/x-ndjson", "gzip"),
}
FETCH_CONCURRENCY = 16


def export_key(account: str, job_id: str, fmt: str) -> str:
    return f"exports/{account}/{job_id}.{FORMATS[fmt][0]}"


log = logging.getLogger("jobs.exports")


def upload_marker_key(job_id: str) -> str:
    return f"{PREFIX}export-upload:{job_id}"


class PartSink:
    """A write-only file for zipfile/gzip that buffers bytes until a part is full."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None

    def seekable(self) -> bool:
        return False

    def take(self, size: int | None = None) -> bytes:
        """Remove and return the first `size` bytes (all when None)."""
        size = len(self.buffer) if size is None else size
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk


class MultipartUpload:
    """One S3 multipart upload, its parts uploaded as they fill."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        content_type: str,
        part_bytes: int,
        content_encoding: str | None = None,
    ) -> None:
        self.storage = storage
        self.key = key
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.part_bytes = part_bytes
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.size = 0

    async def start(self) -> str:
        encoding = {"ContentEncoding": self.content_encoding} if self.content_encoding else {}
        answer = await self._call(
            "create_multipart_upload",
            Bucket=self.storage.bucket,
            Key=self.key,
            ContentType=self.content_type,
            **encoding,
        )
        self.upload_id = answer["UploadId"]
        return answer["UploadId"]

    async def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            answer = await getattr(self.storage.client, name)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            metrics.S3_OPERATIONS.labels(name, "error").inc()
            raise translate_s3_error(exc, f"{name} {self.key}") from exc
        metrics.S3_OPERATIONS.labels(name, "ok").inc()
        return answer

    async def put(self, data: bytes) -> None:
        number = len(self.parts) + 1
        answer = await self._call(
            "upload_part",
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.size += len(data)
        metrics.S3_BYTES.labels("out").inc(len(data))

    async def drain(self, sink: PartSink, final: bool = False) -> None:
        """Upload full parts from the sink; with `final`, the rest too."""
        while len(sink.buffer) >= self.part_bytes:
            await self.put(sink.take(self.part_bytes))
        if final and (sink.buffer or not self.parts):
            await self.put(sink.take())

    async def complete(self) -> None:
        await self._call(
            "complete_multipart_upload",
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    async def abort(self) -> None:
        if self.upload_id is not None:
            await abort_upload(self.storage, self.key, self.upload_id)


async def abort_upload(storage: Storage, key: str, upload_id: str) -> None:
    """Abort a multipart upload; one that is already gone is fine."""
    try:
        await storage.client.abort_multipart_upload(
            Bucket=storage.bucket, Key=key, UploadId=upload_id
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
            raise translate_s3_error(exc, f"abort {key}") from exc
    except BotoCoreError as exc:
        raise translate_s3_error(exc, f"abort {key}") from exc


async def abort_stale_uploads(storage: Storage, store: JobStore) -> int:
    """Abort the open uploads under `exports/` whose job has ended, or whose record is
    gone and which are over an hour old: the ones an attempt could not abort because
    S3 was down, or that a crash left before their marker was written."""
    aborted = 0
    paginator = storage.client.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=storage.bucket, Prefix="exports/"):
        for upload in page.get("Uploads", []):
            key = upload["Key"]
            job_id = key.rsplit("/", 1)[-1].split(".", 1)[0]
            state = await store.redis.hget(record_key(job_id), "state")
            if state is None:
                if time.time() - upload["Initiated"].timestamp() < 3600:
                    continue
            elif state not in (b"succeeded", b"failed", b"cancelled"):
                continue  # its job may still run, and aborts it itself
            await abort_upload(storage, key, upload["UploadId"])
            aborted += 1
    return aborted


async def user_document_keys(storage: Storage, account: str, user_id: str) -> AsyncIterator[str]:
    """The S3 keys of a user's documents, page by page (never the whole list in memory)."""
    paginator = storage.client.get_paginator("list_objects_v2")
    prefix = f"{user_prefix(account, user_id)}documents/"
    try:
        async for page in paginator.paginate(Bucket=storage.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]
    except (ClientError, BotoCoreError) as exc:
        raise translate_s3_error(exc, f"list {prefix}") from exc


async def export_entry(
    storage: Storage, documents: Documents, store: JobStore, key: str
) -> dict[str, Any]:
    """One document as exported: the document resource, its text, its latest analysis."""
    try:
        stored = json.loads(await storage.get_bytes(key))
    except NotFound:
        return {}
    meta = await documents.get(stored["id"])
    analysis = None
    if meta is not None and meta.latest_analysis_job:
        record = await store.get(meta.latest_analysis_job)
        if record is not None and record.state.value != "succeeded":
            analysis = {"job_id": record.id, "state": record.state.value}
        else:
            location = analysis_key(meta.account, meta.user_id, meta.id, meta.latest_analysis_job)
            try:
                analysis = {
                    "state": "succeeded",
                    **json.loads(await storage.get_bytes(location)),
                }
            except NotFound:
                analysis = None
    return {
        "id": stored["id"],
        "user_id": stored["user_id"],
        "title": stored.get("title"),
        "size_bytes": stored["size_bytes"],
        "created_at": rfc3339(stored["created_at"]),
        "text": stored["text"],
        "latest_analysis": analysis,
    }


async def _entries(
    storage: Storage, documents: Documents, store: JobStore, account: str, user_id: str
) -> AsyncIterator[dict[str, Any]]:
    """The user's documents in key order, fetched a few at a time."""
    window: list[asyncio.Task[dict[str, Any]]] = []
    try:
        async for key in user_document_keys(storage, account, user_id):
            window.append(asyncio.create_task(export_entry(storage, documents, store, key)))
            if len(window) >= FETCH_CONCURRENCY:
                entry = await window.pop(0)
                if entry:
                    yield entry
        while window:
            entry = await window.pop(0)
            if entry:
                yield entry
    finally:
        for task in window:
            task.cancel()


async def count_documents(storage: Storage, account: str, user_id: str) -> int:
    return sum([1 async for _ in user_document_keys(storage, account, user_id)])


async def build_export(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Stream a user's export to S3 at the job's fixed key and return what was written.

    Retries: S3 outages are transient (the upload is aborted and the next attempt
    starts over); a cancellation or the soft time limit aborts the upload too.
    """
    deps = run.deps
    storage, settings = deps.storage, deps.settings
    fmt, user_id = args["format"], args["user_id"]
    _, content_type, content_encoding = FORMATS[fmt]
    key = export_key(run.account, run.job_id, fmt)
    marker = upload_marker_key(run.job_id)
    earlier = await deps.redis.get(marker)
    if earlier:
        # An attempt that crashed left its upload open: abort it before starting again.
        await abort_upload(storage, key, earlier.decode())
    total = await count_documents(storage, run.account, user_id)
    await run.progress(0.0, f"0/{total} documents")
    upload = MultipartUpload(
        storage, key, content_type, settings.export_part_bytes, content_encoding
    )
    upload_id = await upload.start()
    await deps.redis.set(marker, upload_id, ex=7 * 24 * 3600)
    try:
        count = await _write_archive(run, upload, fmt, user_id, total, args)
        await upload.complete()
    except BaseException:
        try:
            await asyncio.shield(upload.abort())
        except Exception:
            # S3 may be why we are here: keep the marker, so the next attempt (or the
            # janitor, once the job has ended) aborts this upload. The job's own error
            # stays the one that counts.
            log.warning("could not abort the upload of %s", key, exc_info=True)
        else:
            await deps.redis.delete(marker)
        raise
    await deps.redis.delete(marker)
    return {
        "format": fmt,
        "size_bytes": upload.size,
        "documents": count,
        "key": key,
        "content_type": content_type,
    }


async def _write_archive(
    run: JobRun, upload: MultipartUpload, fmt: str, user_id: str, total: int, args: dict[str, Any]
) -> int:
    deps = run.deps
    documents = Documents(deps.redis, deps.storage, deps.settings.max_document_bytes)
    sink = PartSink()
    count = 0
    entries = _entries(deps.storage, documents, deps.store, run.account, user_id)
    if fmt == "zip":
        archive = ZipStream(sink.write)
        # The manifest's entries wait on disk, not in memory, until the end.
        with tempfile.TemporaryFile() as manifest:
            async for entry in entries:
                data = json.dumps(entry, ensure_ascii=False).encode()
                path = f"documents/{entry['id']}.json"
                archive.add(path, data)
                digest = hashlib.sha256(data).hexdigest()
                item = {"id": entry["id"], "path": path, "sha256": digest, "size_bytes": len(data)}
                manifest.write((b"," if count else b"") + json.dumps(item).encode())
                count += 1
                await upload.drain(sink)
                if count % 50 == 0 or count == total:
                    await run.progress(count / max(total, 1), f"{count}/{total} documents")
            head = {
                "job_id": run.job_id,
                "user_id": user_id,
                "created_at": rfc3339(run.record.created_at),
                "format": fmt,
                "count": count,
            }
            manifest.seek(0)
            archive.add_chunks("manifest.json", _manifest_chunks(head, manifest))
            await upload.drain(sink)
            archive.close()
    else:
        with gzip.GzipFile(fileobj=sink, mode="wb") as lines:  # type: ignore[arg-type]
            async for entry in entries:
                lines.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
                count += 1
                await upload.drain(sink)
                if count % 50 == 0 or count == total:
                    await run.progress(count / max(total, 1), f"{count}/{total} documents")
    await upload.drain(sink, final=True)
    return count


def _manifest_chunks(head: dict[str, Any], entries: Any) -> Iterator[bytes]:
    yield json.dumps(head).encode()[:-1] + b', "entries": ['
    while chunk := entries.read(1024 * 1024):
        yield chunk
    yield b"]}"


async def export_view(storage: Storage, ttl_s: int, result: dict[str, Any]) -> dict[str, Any]:
    """The public export result: a download URL presigned now (never stored)."""
    url = await storage.client.generate_presigned_url(
        "get_object",
        Params={"Bucket": storage.bucket, "Key": result["key"]},
        ExpiresIn=ttl_s,
    )
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    return {
        "format": result["format"],
        "size_bytes": result["size_bytes"],
        "documents": result["documents"],
        "content_type": result.get("content_type"),
        "download_url": url,
        "expires_at": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


EXPORT = JobKind("export", build_export)
