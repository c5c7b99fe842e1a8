"""Dead letters (operators only): jobs that failed for good, and their replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import JOB_ID_PATTERN, AdminDep, PresenterDep, StoreDep
from api.schemas import JobPublic, Page, accepted, attempt_resource, rfc3339
from jobs.engine.records import JobRecord
from jobs.errors import NotFound

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])


class DeadLetterPublic(BaseModel):
    """A job that failed for good, with everything needed to judge and replay it."""

    id: str
    kind: str
    account: str
    arguments: dict[str, Any]
    error: dict[str, Any] | None
    traceback: str | None
    attempts: list[dict[str, Any]]
    created_at: str | None
    failed_at: str | None
    replayed_as: str | None
    request_id: str | None = None


def dead_letter_public(record: JobRecord) -> DeadLetterPublic:
    return DeadLetterPublic(
        id=record.id,
        kind=record.kind,
        account=record.account,
        arguments=record.args,
        error=record.error,
        traceback=record.traceback,
        attempts=[attempt_resource(a) for a in record.attempts],
        created_at=rfc3339(record.created_at),
        failed_at=rfc3339(record.finished_at),
        replayed_as=record.replayed_as,
        request_id=record.request_id,
    )


async def _dead_letter(job_id: str, store: StoreDep) -> JobRecord:
    record = await store.get_dead_letter(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
    if record is None:
        raise NotFound("no such dead letter")
    return record


@router.get("", response_model=Page[DeadLetterPublic])
async def list_dead_letters(
    _: AdminDep,
    store: StoreDep,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    account: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[DeadLetterPublic]:
    """Dead letters, newest failure first."""
    page = await store.list_dead_letters(limit=limit, cursor=cursor, kind=kind, account=account)
    return Page[DeadLetterPublic](
        data=[dead_letter_public(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/{job_id}", response_model=DeadLetterPublic)
async def get_dead_letter(
    _: AdminDep, store: StoreDep, job_id: Annotated[str, Path(max_length=64)]
) -> DeadLetterPublic:
    """One dead letter."""
    return dead_letter_public(await _dead_letter(job_id, store))


@router.post(
    "/{job_id}/replay", status_code=202, response_model=JobPublic, response_class=JSONResponse
)
async def replay_dead_letter(
    _: AdminDep,
    store: StoreDep,
    presenter: PresenterDep,
    request: Request,
    job_id: Annotated[str, Path(max_length=64)],
) -> JSONResponse:
    """Run a dead job again as a new job of the same account (`replay_of` links them); 409
    when it was already replayed."""
    record = await _dead_letter(job_id, store)
    enqueued = await store.replay(record, request.state.request_id)
    return await accepted(store, presenter, enqueued)
