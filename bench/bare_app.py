"""The bare peer of the HTTP enqueue benchmark: a FastAPI endpoint that only calls arq's
`enqueue_job`, as arq's own documentation does it.

    uvicorn bench.bare_app:app        (reads REDIS_URL)

`POST /enqueue` takes a JSON body like ours (`{"user_id", "format"}`, validated by
pydantic), enqueues `bench_noop` with it, and answers 202 with the arq job id. No auth, no
job record, no idempotency, no metrics or request-id middleware: the floor that
`POST /v1/exports` is measured against.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from arq.connections import ArqRedis, RedisSettings, create_pool
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench.workers import PLAIN_NOOP, json_dumps


class EnqueueBody(BaseModel):
    user_id: str
    format: Literal["zip", "ndjson"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.arq = await create_pool(
        RedisSettings.from_dsn(os.environ["REDIS_URL"]), job_serializer=json_dumps
    )
    yield
    await app.state.arq.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/enqueue", status_code=202)
async def enqueue(body: EnqueueBody, request: Request) -> JSONResponse:
    """Enqueue one arq job and answer with its id."""
    pool: ArqRedis = request.app.state.arq
    job = await pool.enqueue_job(PLAIN_NOOP)
    assert job is not None
    return JSONResponse({"id": job.job_id, "user_id": body.user_id}, status_code=202)
