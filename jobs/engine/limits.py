"""Per-account limits kept in Redis, so they hold across every API process:
`requests_per_second` (a GCRA rate) and the number of open event streams."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from jobs.engine import keys
from jobs.engine.records import now_ms
from jobs.engine.scripts import GCRA, SLOTS, GcraArgs, GcraKeys, SlotsArgs, SlotsKeys
from jobs.errors import TooManyRequests
from jobs.settings import Settings

POLICY = "default"
# An open event stream holds its slot this long unless its keep-alive refreshes it.
STREAM_SLOT_MS = 60_000


@dataclass(frozen=True, slots=True)
class RateState:
    """Where an account stands against its request rate, as IETF RateLimit headers say."""

    quota: int
    window_s: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.quota};w={self.window_s}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_s}',
        }


class AccountLimiter:
    """Checks an account's request rate and its open event streams."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def admit_request(self, account: str) -> RateState | None:
        """Count one API request against the account's `requests_per_second`; None when it
        has no such limit. `TooManyRequests` (with Retry-After and RateLimit headers) when
        the request would pass it: nothing else is done for it."""
        rate = self.settings.limits_for(account).requests_per_second
        if rate is None:
            return None
        burst = max(1, math.ceil(rate))
        allowed, remaining, reset_ms, retry_ms = await GCRA(
            self.redis,
            GcraKeys(tat=keys.request_rate(account)),
            GcraArgs(now_ms=now_ms(), interval_ms=1000 / rate, burst=burst),
        )
        state = RateState(
            quota=burst,
            window_s=max(1, math.ceil(burst / rate)),
            remaining=int(remaining),
            reset_s=max(0, math.ceil(int(reset_ms) / 1000)),
        )
        if not allowed:
            raise TooManyRequests(
                f"over this account's limit of {rate:g} requests a second (ACCOUNT_LIMITS)",
                type="rate_limited",
                retry_after=max(1.0, int(retry_ms) / 1000),
                headers=state.headers(),
            )
        return state

    async def open_stream(self, account: str | None) -> StreamSlot | None:
        """Take one of the account's `EVENT_STREAMS_PER_ACCOUNT` open event streams (None
        for a caller without an account); `TooManyRequests` when all are taken. The
        stream refreshes it while open and closes it at its end."""
        if account is None:
            return None
        slot = StreamSlot(self.redis, account, self.settings.event_streams_per_account)
        if not await slot.refresh():
            raise TooManyRequests(
                f"this account already has {slot.limit} open event streams "
                "(EVENT_STREAMS_PER_ACCOUNT): close one, or poll GET /v1/jobs/{id}",
                type="too_many_streams",
                retry_after=5,
            )
        return slot


class StreamSlot:
    """One open event stream's place in its account's limit."""

    def __init__(self, redis: Redis, account: str, limit: int) -> None:
        self.redis = redis
        self.account = account
        self.limit = limit
        self.member = secrets.token_hex(8)

    async def refresh(self) -> bool:
        """Keep (or take) the place for another `STREAM_SLOT_MS`; False when none is free."""
        now = now_ms()
        held = await SLOTS(
            self.redis,
            SlotsKeys(slots=keys.stream_slots(self.account)),
            SlotsArgs(
                now_ms=now, limit=self.limit, member=self.member, expires_ms=now + STREAM_SLOT_MS
            ),
        )
        return bool(held)

    async def close(self) -> None:
        """Give the place back."""
        await self.redis.zrem(keys.stream_slots(self.account), self.member)
