"""User-data exports: enqueue one; its job's result carries a freshly presigned URL."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import AccountDep, IdempotencyKeyDep, ServicesDep
from api.schemas import JobPublic, accepted
from jobs.documents import USER_ID_PATTERN
from jobs.engine.records import body_fingerprint
from jobs.exports import EXPORT

router = APIRouter(prefix="/v1/exports", tags=["exports"])


class ExportCreate(BaseModel):
    user_id: str = Field(pattern=USER_ID_PATTERN)
    format: Literal["zip", "ndjson"]


@router.post("", status_code=202, response_model=JobPublic)
async def create_export(
    body: ExportCreate,
    account: AccountDep,
    services: ServicesDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep = None,
) -> JSONResponse:
    """Enqueue an export of every document of a user, with its latest analysis; needs only
    Redis (S3 may be down: the job retries). The finished job's `result.download_url` is
    presigned at each lookup."""
    args = body.model_dump()
    enqueued = await services.store.create(
        kind=EXPORT.name,
        account=account,
        args=args,
        idempotency_key=idempotency_key,
        fingerprint=body_fingerprint("POST", request.url.path, args),
        request_id=request.state.request_id,
    )
    return await accepted(services.store, services.presenter, enqueued)
