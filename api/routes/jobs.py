"""Job status: one job, a filtered list, cancellation, and a live event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import AccountDep, CallerDep, JobEventsDep, PresenterDep, StoreDep, VisibleJob
from api.schemas import JobPublic, Page, job_public, poll_after_seconds
from jobs.engine.limits import AccountLimiter
from jobs.engine.records import now_ms
from jobs.errors import Conflict, NotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StateFilter = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]
KEEPALIVE_S = 15.0


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job: VisibleJob, response: Response, presenter: PresenterDep) -> JobPublic:
    """The job's current state, from its record; `Retry-After` while it is unfinished."""
    if not job.state.finished:
        response.headers["Retry-After"] = str(poll_after_seconds(job, now_ms()))
    return await job_public(job, presenter)


@router.get("", response_model=Page[JobPublic])
async def list_jobs(
    account: AccountDep,
    store: StoreDep,
    presenter: PresenterDep,
    state: StateFilter | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[JobPublic]:
    """The account's jobs, newest first."""
    page = await store.list_account_jobs(
        account, limit=limit, cursor=cursor, state=state, kind=kind
    )
    data = [await job_public(r, presenter) for r in page.items]
    return Page[JobPublic](data=data, next_cursor=page.next_cursor)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobPublic,
    response_class=JSONResponse,
    responses={409: {"description": "the job already finished"}},
)
async def cancel_job(job: VisibleJob, store: StoreDep, presenter: PresenterDep) -> JSONResponse:
    """Cancel a job: a waiting one ends `cancelled` at once and never runs; a running one is
    stopped by its worker within about a second, after its cleanup (`cancel_requested_at`
    is set meanwhile). A job that already ended (cancelled included) is a 409."""
    outcome = await store.cancel(job)
    if outcome.startswith("ended:"):
        state = outcome.removeprefix("ended:")
        raise Conflict(f"the job already ended: it {state}", state=state)
    record = await store.get(job.id)
    if outcome == "missing" or record is None:
        raise NotFound("no such job")
    return JSONResponse(
        (await job_public(record, presenter)).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}", "Retry-After": "1"},
    )


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 429: {"description": "too many"}},
)
async def job_events(
    job: VisibleJob,
    caller: CallerDep,
    request: Request,
    events: JobEventsDep,
    store: StoreDep,
    presenter: PresenterDep,
) -> StreamingResponse:
    """Server-sent events: a `job` event with the job's snapshot now and at every change
    (state, attempt, progress), until the job finishes; then the stream closes. An account
    holds at most EVENT_STREAMS_PER_ACCOUNT open streams (429 beyond)."""
    limiter: AccountLimiter = request.app.state.limiter
    # Refused now (429), before the answer starts.
    slot = await limiter.open_stream(caller.account) if not caller.admin else None

    async def stream() -> AsyncIterator[str]:
        try:
            async with events.watch(store.channel(job.id)) as changed:
                last, sequence = "", 0
                while True:
                    changed.clear()
                    record = await store.get(job.id)
                    if record is None:
                        return
                    snapshot = (await job_public(record, presenter)).model_dump_json()
                    if snapshot != last:
                        sequence += 1
                        yield f"event: job\nid: {sequence}\ndata: {snapshot}\n\n"
                        last = snapshot
                    if record.state.finished or await request.is_disconnected():
                        return
                    try:
                        async with asyncio.timeout(KEEPALIVE_S):
                            await changed.wait()
                    except TimeoutError:
                        if slot is not None:
                            await slot.refresh()
                        yield ": keep-alive\n\n"
        finally:
            if slot is not None:
                await slot.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
