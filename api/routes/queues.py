"""Queues (operators only): pause and resume a job kind or an account.

A paused kind's or account's jobs stay queued (nothing is lost, new ones are still
accepted) and none of them starts; those already running finish. `/health/queues` and the
dashboard show what is paused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from api.deps import ACCOUNT_ID_PATH, KIND_PATH, AdminDep, ServicesDep
from jobs.engine.scheduler import Scheduler

router = APIRouter(prefix="/v1/queues", tags=["operations"])


class Paused(BaseModel):
    kinds: list[str]
    accounts: list[str]


def _scheduler(services: ServicesDep) -> Scheduler:
    return Scheduler(services.redis, services.settings, [])


@router.get("/paused", response_model=Paused)
async def paused(_: AdminDep, services: ServicesDep) -> Paused:
    """What is paused."""
    return Paused(**await _scheduler(services).paused())


@router.post("/kinds/{kind}/pause", response_model=Paused)
async def pause_kind(
    _: AdminDep, services: ServicesDep, kind: Annotated[str, Path(pattern=KIND_PATH)]
) -> Paused:
    """Stop starting jobs of this kind; they stay queued, running ones finish."""
    scheduler = _scheduler(services)
    await scheduler.pause(kind=kind)
    return Paused(**await scheduler.paused())


@router.post("/kinds/{kind}/resume", response_model=Paused)
async def resume_kind(
    _: AdminDep, services: ServicesDep, kind: Annotated[str, Path(pattern=KIND_PATH)]
) -> Paused:
    """Start this kind's jobs again."""
    scheduler = _scheduler(services)
    await scheduler.resume(kind=kind)
    return Paused(**await scheduler.paused())


@router.post("/accounts/{account}/pause", response_model=Paused)
async def pause_account(
    _: AdminDep, services: ServicesDep, account: Annotated[str, Path(pattern=ACCOUNT_ID_PATH)]
) -> Paused:
    """Stop starting this account's jobs; they stay queued, running ones finish."""
    scheduler = _scheduler(services)
    await scheduler.pause(account=account)
    return Paused(**await scheduler.paused())


@router.post("/accounts/{account}/resume", response_model=Paused)
async def resume_account(
    _: AdminDep, services: ServicesDep, account: Annotated[str, Path(pattern=ACCOUNT_ID_PATH)]
) -> Paused:
    """Start this account's jobs again."""
    scheduler = _scheduler(services)
    await scheduler.resume(account=account)
    return Paused(**await scheduler.paused())
