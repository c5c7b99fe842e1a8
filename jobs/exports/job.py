"""The export job: every document of a user, with its latest analysis, streamed to S3.

Its key is fixed by the job (`exports/<account>/<job id>.<ext>`), so a rerun replaces
it; a failure, a cancellation or the soft time limit aborts the upload, and a rerun
first aborts the upload an earlier, crashed attempt left behind (`uploads.py`): no
partial archive is ever visible and no parts are orphaned.

`zip` holds `documents/<id>.json` and `manifest.json` (SHA-256 per entry); `ndjson` is
JSON lines, stored gzip-compressed and served with `Content-Encoding: gzip`, so a plain
GET of its download URL reads NDJSON.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.analysis_batches.job import KIND as BATCH_KIND
from jobs.analysis_batches.job import document_result
from jobs.documents import Documents, analysis_key, user_prefix
from jobs.engine import JobRun
from jobs.engine.records import rfc3339
from jobs.engine.store import JobStore
from jobs.errors import NotFound
from jobs.exports.archive import ZipStream
from jobs.exports.uploads import MultipartUpload, PartSink, abort_upload, upload_marker_key
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger("jobs.exports")


@dataclass(frozen=True)
class Format:
    """How an export format is stored and served."""

    extension: str
    content_type: str
    content_encoding: str | None = None


FORMATS = {
    "zip": Format("zip", "application/zip"),
    "ndjson": Format("ndjson.gz", "application/x-ndjson", "gzip"),
}
FETCH_CONCURRENCY = 16


def export_key(account: str, job_id: str, fmt: str) -> str:
    return f"exports/{account}/{job_id}.{FORMATS[fmt].extension}"


def user_document_keys(storage: Storage, account: str, user_id: str) -> AsyncIterator[str]:
    """The S3 keys of a user's documents, page by page (never the whole list in memory)."""
    return storage.list_keys(f"{user_prefix(account, user_id)}documents/")


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
        state = record.state.value if record is not None else "succeeded"
        if record is not None and record.kind == BATCH_KIND:
            # A batch makes it a document's latest analysis once the document's result is in.
            entry = await document_result(store.redis, record.id, meta.id)
            state = entry["state"] if entry else "failed"
        if state != "succeeded":
            analysis = {"job_id": meta.latest_analysis_job, "state": state}
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
    shape = FORMATS[fmt]
    key = export_key(run.account, run.job_id, fmt)
    marker = upload_marker_key(run.job_id)
    earlier = await deps.redis.get(marker)
    if earlier:
        # An attempt that crashed left its upload open: abort it before starting again.
        await abort_upload(storage, key, earlier.decode())
    total = await count_documents(storage, run.account, user_id)
    await run.progress(0.0, f"0/{total} documents")
    upload = MultipartUpload(
        storage, key, shape.content_type, settings.export_part_bytes, shape.content_encoding
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
        "content_type": shape.content_type,
        "content_encoding": shape.content_encoding,
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


async def present_export(storage: Storage, settings: Settings, result: Any) -> Any:
    """The public export result: a download URL presigned now (never stored)."""
    if not isinstance(result, dict) or "key" not in result:
        return result
    ttl_s = settings.export_url_ttl_seconds
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
        "content_encoding": result.get("content_encoding"),
        "download_url": url,
        "expires_at": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
