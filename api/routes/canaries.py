"""Canary jobs (operators only): a real job through the whole pipeline, on demand."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import AdminDep, IdempotencyKeyDep, PresenterDep, StoreDep
from api.schemas import JobPublic, accepted
from jobs.canaries import CANARY, CANARY_ACCOUNT
from jobs.engine.records import body_fingerprint

router = APIRouter(prefix="/v1/canaries", tags=["operations"])


@router.post("", status_code=202, response_model=JobPublic, response_class=JSONResponse)
async def create_canary(
    _: AdminDep,
    store: StoreDep,
    presenter: PresenterDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep = None,
) -> JSONResponse:
    """Enqueue a canary job: the worker round-trips a small object through S3."""
    enqueued = await store.create(
        kind=CANARY.name,
        account=CANARY_ACCOUNT,
        args={},
        idempotency_key=idempotency_key,
        fingerprint=body_fingerprint("POST", request.url.path, {}),
        request_id=request.state.request_id,
    )
    return await accepted(store, presenter, enqueued)
