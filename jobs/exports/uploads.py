"""Export archives are written to S3 with a multipart upload as they are built.

Parts of `EXPORT_PART_BYTES` (at least 5 MiB) leave as they fill, so a worker's memory
does not grow with the export. An upload that could not be aborted (S3 down at that
moment) keeps a marker in Redis; the next attempt aborts it first, and a janitor in every
worker aborts what is left once the job has ended.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobs import metrics
from jobs.engine import keys
from jobs.engine.store import JobStore
from jobs.storage import Storage, translate_s3_error


def upload_marker_key(job_id: str) -> str:
    """Where an attempt notes its open upload, for the next attempt to abort."""
    return keys.domain_key("export-upload", job_id)


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
        extra = {"ContentEncoding": self.content_encoding} if self.content_encoding else {}
        answer = await self._call(
            "create_multipart_upload",
            Bucket=self.storage.bucket,
            Key=self.key,
            ContentType=self.content_type,
            **extra,
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
            state = await store.state(job_id)
            if state is None:
                if time.time() - upload["Initiated"].timestamp() < 3600:
                    continue
            elif not state.finished:
                continue  # its job may still run, and aborts it itself
            await abort_upload(storage, key, upload["UploadId"])
            aborted += 1
    return aborted
