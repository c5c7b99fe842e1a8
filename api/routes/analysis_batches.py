"""Analysis batches: many documents analysed as one job, and its results page by page."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from api.deps import AccountDep, IdempotencyKeyDep, ServicesDep, VisibleJob
from api.schemas import JobPublic, Page, accepted
from jobs.analysis_batches import ANALYSIS_BATCH, MAX_DOCUMENTS, create_batch, results_page
from jobs.documents import USER_ID_PATTERN
from jobs.engine.records import body_fingerprint
from jobs.errors import NotFound

router = APIRouter(prefix="/v1/analysis-batches", tags=["analysis batches"])


class AnalysisBatchCreate(BaseModel):
    document_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_DOCUMENTS)
    user_id: str | None = Field(None, pattern=USER_ID_PATTERN)
    instructions: str | None = Field(None, max_length=4000)
    mode: Literal["standard", "economy"] = "standard"

    @model_validator(mode="after")
    def _one_source(self) -> AnalysisBatchCreate:
        if (self.document_ids is None) == (self.user_id is None):
            raise ValueError("give document_ids (1 to 10,000) or user_id, not both")
        return self


class BatchResult(BaseModel):
    """One document's outcome in a batch."""

    document_id: str
    state: str
    analysis: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None
    error: dict[str, str] | None = None


@router.post("", status_code=202, response_model=JobPublic)
async def create_analysis_batch(
    body: AnalysisBatchCreate,
    account: AccountDep,
    services: ServicesDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep = None,
) -> JSONResponse:
    """Enqueue one job that analyses every document given (or every document of a user):
    `standard`, one Messages API call each, or `economy`, Claude's Message Batches at half
    the price. An id that is unknown or another account's: 422 naming it, nothing made."""
    enqueued = await create_batch(
        services.store,
        account,
        mode=body.mode,
        instructions=body.instructions,
        document_ids=body.document_ids,
        user_id=body.user_id,
        idempotency_key=idempotency_key,
        fingerprint=body_fingerprint("POST", request.url.path, body.model_dump()),
        request_id=request.state.request_id,
    )
    return await accepted(services.store, services.presenter, enqueued)


@router.get("/{job_id}/results", response_model=Page[BatchResult])
async def get_analysis_batch_results(
    job: VisibleJob,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> JSONResponse:
    """One entry per document, in the order given: `succeeded` with its analysis, model and
    usage, `failed` with its error, or `pending` (`cancelled` once the batch was)."""
    if job.kind != ANALYSIS_BATCH.name:
        raise NotFound("no such analysis batch")
    data, next_cursor = await results_page(
        services.redis, services.storage, job, limit=limit, cursor=cursor
    )
    # Fields a document's entry does not have are left out, not null.
    return JSONResponse({"data": data, "next_cursor": next_cursor})
