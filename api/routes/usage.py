"""Token usage per account and model: what a customer is billed on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AccountDep, RedisDep
from jobs.analyses import account_usage

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class ModelUsage(BaseModel):
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class UsagePublic(BaseModel):
    data: list[ModelUsage]


@router.get("", response_model=UsagePublic)
async def get_usage(account: AccountDep, redis: RedisDep) -> UsagePublic:
    """Claude tokens used by this account's analyses, per model: every paid call counted
    once, prompt caching's reads and writes apart."""
    return UsagePublic(data=[ModelUsage(**m) for m in await account_usage(redis, account)])
