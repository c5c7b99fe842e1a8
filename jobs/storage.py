"""S3 access through one aioboto3 client per process, with botocore errors translated once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobs import metrics, tracing
from jobs.errors import NotFound, ServiceError, TransientError
from jobs.settings import Settings

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
}  # fmt: skip
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def translate_s3_error(exc: Exception, what: str) -> ServiceError:
    """Map a botocore failure to the error tree: throttling, 5xx and network are transient."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING_CODES:
            return NotFound(f"{what}: not found in S3", type="s3_not_found")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientError(f"{what}: S3 answered {code or status}", type="s3_unavailable")
        return ServiceError(f"{what}: S3 refused the request ({code or status})", type="s3_error")
    return TransientError(
        f"{what}: S3 is unreachable ({type(exc).__name__})", type="s3_unavailable"
    )


class Storage:
    """The service's bucket: small typed helpers over the S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def check(self) -> None:
        """Raise a `ServiceError` unless the bucket answers."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, f"bucket {self.bucket}") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (development and tests only)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self.client.create_bucket(Bucket=self.bucket)

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Write one object."""
        try:
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            metrics.S3_OPERATIONS.labels("put_object", "error").inc()
            raise translate_s3_error(exc, f"put {key}") from exc
        metrics.S3_OPERATIONS.labels("put_object", "ok").inc()
        metrics.S3_BYTES.labels("out").inc(len(data))

    async def get_bytes(self, key: str) -> bytes:
        """Read one object whole; `NotFound` when it is missing."""
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=key)
            async with answer["Body"] as body:
                data = await body.read()
        except (ClientError, BotoCoreError) as exc:
            metrics.S3_OPERATIONS.labels("get_object", "error").inc()
            raise translate_s3_error(exc, f"get {key}") from exc
        metrics.S3_OPERATIONS.labels("get_object", "ok").inc()
        metrics.S3_BYTES.labels("in").inc(len(data))
        return data

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        """The keys under `prefix`, page by page (never the whole list in memory)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, f"list {prefix}") from exc

    async def delete_many(self, keys: list[str]) -> None:
        """Delete objects, a thousand per request (missing ones are fine)."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            try:
                await self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise translate_s3_error(exc, f"delete {len(batch)} objects") from exc

    async def delete(self, key: str) -> None:
        """Delete one object (no error when it is already gone)."""
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, f"delete {key}") from exc


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """One S3 client for the life of the process; closed on exit."""
    session = aioboto3.Session()
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
        signature_version="s3v4",
    )
    key_id = settings.aws_access_key_id
    secret = settings.aws_secret_access_key
    async with session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=config,
    ) as client:
        tracing.instrument_s3(client)
        yield Storage(client, settings.s3_bucket)
