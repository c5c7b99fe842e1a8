"""Analyses: a Claude analysis of a document, as a job."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import IdempotencyKeyDep, OwnedDocument, ServicesDep
from api.schemas import JobPublic, accepted
from jobs.analyses import ANALYSIS
from jobs.engine.records import body_fingerprint

router = APIRouter(prefix="/v1/documents", tags=["analyses"])


class AnalysisCreate(BaseModel):
    instructions: str | None = Field(None, max_length=4000)


@router.post("/{doc_id}/analyses", status_code=202, response_model=JobPublic)
async def create_analysis(
    document: OwnedDocument,
    request: Request,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyDep = None,
    body: AnalysisCreate | None = None,
) -> JSONResponse:
    """Enqueue an analysis of the document by Claude; needs only Redis (S3 may be down)."""
    args = {"document_id": document.id, "instructions": body.instructions if body else None}
    enqueued = await services.store.create(
        kind=ANALYSIS.name,
        account=document.account,
        args=args,
        idempotency_key=idempotency_key,
        fingerprint=body_fingerprint("POST", request.url.path, args),
        request_id=request.state.request_id,
    )
    if not enqueued.replayed:
        await services.documents.set_latest_analysis(document.id, enqueued.job_id)
    return await accepted(services.store, services.presenter, enqueued)
