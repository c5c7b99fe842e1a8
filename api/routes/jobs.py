"""Job status: one job, and a filtered, paginated list of the account's jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import AccountDep, StoreDep, VisibleJob
from api.schemas import JobPublic, Page, job_public, poll_after_seconds
from jobs.records import account_index_key, now_ms

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StateFilter = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job: VisibleJob, response: Response) -> JobPublic:
    """The job's current state, from its record; `Retry-After` while it is unfinished."""
    if not job.state.finished:
        response.headers["Retry-After"] = str(poll_after_seconds(job, now_ms()))
    return job_public(job)


@router.get("", response_model=Page[JobPublic])
async def list_jobs(
    account: AccountDep,
    store: StoreDep,
    state: StateFilter | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[JobPublic]:
    """The account's jobs, newest first."""
    page = await store.list(
        account_index_key(account), limit=limit, cursor=cursor, state=state, kind=kind
    )
    return Page[JobPublic](data=[job_public(r) for r in page.items], next_cursor=page.next_cursor)
