"""Token usage per account and model: what a customer is billed on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AccountDep, RedisDep
from jobs.analyses import account_usage, account_usage_by_mode

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class ModelUsage(BaseModel):
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class ModeUsage(ModelUsage):
    mode: str
    price_factor: float


class UsagePublic(BaseModel):
    data: list[ModelUsage]
    by_mode: list[ModeUsage] = []


@router.get("", response_model=UsagePublic)
async def get_usage(account: AccountDep, redis: RedisDep) -> UsagePublic:
    """Claude tokens used by this account's analyses, per model: every paid call counted
    once, prompt caching's reads and writes apart; `by_mode` splits them into `standard`
    and `economy` (Message Batches), with each mode's price factor (economy: 0.5)."""
    return UsagePublic(
        data=[ModelUsage(**m) for m in await account_usage(redis, account)],
        by_mode=[ModeUsage(**m) for m in await account_usage_by_mode(redis, account)],
    )
