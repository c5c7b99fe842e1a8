"""Webhook endpoints: a customer's URL, the events it wants, its signing secrets and health.

Secrets are `whsec_` values (Standard Webhooks), stored encrypted and shown once; a
rotation keeps the old secret signing for `WEBHOOK_SECRET_OVERLAP_SECONDS`. An endpoint
answering `410 Gone`, or failing every attempt for `WEBHOOK_DISABLE_AFTER_SECONDS`, is
disabled.

Keys (`lr:wh:`): `ep:<id>` (hash), `acct:<account>` and `all` (zsets of endpoint ids),
`ep:<id>:deliveries` (zset: the endpoint's deliveries, which are jobs of the engine).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError
from ulid import ULID

from jobs import metrics
from jobs.crypto import SecretBox
from jobs.engine.keys import domain_key
from jobs.engine.records import now_ms, rfc3339
from jobs.engine.scripts import LuaScript
from jobs.errors import Conflict
from jobs.settings import Settings
from jobs.webhooks.ssrf import resolve_target

log = logging.getLogger("jobs.webhooks")

# Ids are checked before they become part of a key: `we_<id>:deliveries` names another
# key of the endpoint (a sorted set), which a lookup must not read as an endpoint.
ENDPOINT_ID_PATTERN = re.compile(r"we_[0-9A-HJKMNP-TV-Z]{26}")
ALL_ENDPOINTS_KEY = domain_key("wh", "all")
DISABLED_TOTAL_KEY = domain_key("wh", "disabled-total")


def endpoint_key(endpoint_id: str) -> str:
    return domain_key("wh", "ep", endpoint_id)


def account_endpoints_key(account: str) -> str:
    return domain_key("wh", "acct", account)


def endpoint_deliveries_key(endpoint_id: str) -> str:
    return domain_key("wh", "ep", endpoint_id, "deliveries")


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class HealthKeys:
    endpoint: str
    disabled_total: str


@dataclass(frozen=True, slots=True)
class HealthArgs:
    outcome: str
    now_ms: int
    reason: str


ENDPOINT_HEALTH = LuaScript("jobs.webhooks", "endpoint_health", HealthKeys, HealthArgs)


@dataclass
class Endpoint:
    id: str
    account: str
    url: str
    events: list[str]
    created_at: int
    secrets: list[dict[str, Any]] = field(default_factory=list)  # {"sealed", "expires_at"}
    disabled_at: int | None = None
    disabled_reason: str | None = None
    failing_since: int | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "created_at": rfc3339(self.created_at),
            "disabled": self.disabled,
            "disabled_at": rfc3339(self.disabled_at),
            "disabled_reason": self.disabled_reason,
        }


class EndpointStore:
    """Endpoints in Redis, with their secrets sealed."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.box = SecretBox(settings)

    async def create(self, account: str, url: str, events: list[str]) -> tuple[Endpoint, str]:
        """Register an endpoint after checking its URL; returns it and its secret. An account
        has at most WEBHOOK_MAX_ENDPOINTS_PER_ACCOUNT (`Conflict` beyond)."""
        await resolve_target(
            url,
            self.settings.webhook_allow_private_networks,
            timeout_s=self.settings.webhook_timeout_seconds,
        )
        endpoint_id = f"we_{ULID()}"
        secret = new_secret()
        endpoint = Endpoint(
            id=endpoint_id,
            account=account,
            url=url,
            events=sorted(set(events)),
            created_at=now_ms(),
            secrets=[{"sealed": self.box.seal(secret, endpoint_id), "expires_at": None}],
        )
        fields: dict[str, str | int] = {
            "id": endpoint.id,
            "account": endpoint.account,
            "url": endpoint.url,
            "events": json.dumps(endpoint.events),
            "created_at": endpoint.created_at,
            "secrets": json.dumps(endpoint.secrets),
        }
        cap = self.settings.webhook_max_endpoints_per_account
        index = account_endpoints_key(account)
        async with self.redis.pipeline(transaction=True) as pipe:
            # Counted and added in one transaction: concurrent registrations cannot pass it.
            while True:
                try:
                    await pipe.watch(index)
                    if await pipe.zcard(index) >= cap:
                        raise Conflict(
                            f"this account has {cap} webhook endpoints, the most it may have "
                            "(WEBHOOK_MAX_ENDPOINTS_PER_ACCOUNT): delete one first",
                            type="too_many_endpoints",
                            limit=cap,
                        )
                    pipe.multi()
                    pipe.hset(endpoint_key(endpoint_id), mapping=fields)  # type: ignore[arg-type]
                    pipe.zadd(index, {endpoint_id: endpoint.created_at})
                    pipe.zadd(ALL_ENDPOINTS_KEY, {endpoint_id: endpoint.created_at})
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        return endpoint, secret

    async def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None (also for a string that is not an endpoint id)."""
        if not ENDPOINT_ID_PATTERN.fullmatch(endpoint_id):
            return None
        raw = await self.redis.hgetall(endpoint_key(endpoint_id))
        if not raw or b"url" not in raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return Endpoint(
            id=h["id"],
            account=h["account"],
            url=h["url"],
            events=json.loads(h["events"]),
            created_at=int(h["created_at"]),
            secrets=json.loads(h["secrets"]),
            disabled_at=int(h["disabled_at"]) if h.get("disabled_at") else None,
            disabled_reason=h.get("disabled_reason") or None,
            failing_since=int(h["failing_since"]) if h.get("failing_since") else None,
        )

    async def list(self, account: str | None) -> list[Endpoint]:
        """An account's endpoints, newest first (every account's with None)."""
        index = account_endpoints_key(account) if account else ALL_ENDPOINTS_KEY
        ids = [m.decode() for m in await self.redis.zrevrange(index, 0, 999)]
        found = [await self.get(i) for i in ids]
        return [e for e in found if e is not None]

    async def count(self, account: str) -> int:
        """How many endpoints the account has registered."""
        return int(await self.redis.zcard(account_endpoints_key(account)))

    async def delete(self, endpoint: Endpoint) -> list[str]:
        """Forget an endpoint and its delivery index; returns the ids of its deliveries (the
        caller ends the pending ones)."""
        index = endpoint_deliveries_key(endpoint.id)
        deliveries = [m.decode() for m in await self.redis.zrange(index, 0, -1)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(endpoint_key(endpoint.id), index)
            pipe.zrem(account_endpoints_key(endpoint.account), endpoint.id)
            pipe.zrem(ALL_ENDPOINTS_KEY, endpoint.id)
            await pipe.execute()
        return deliveries

    async def rotate_secret(self, endpoint: Endpoint) -> str:
        """A new secret; the old ones keep signing for the overlap period."""
        now = now_ms()
        overlap_ms = self.settings.webhook_secret_overlap_seconds * 1000
        kept = [
            {**s, "expires_at": s["expires_at"] or now + overlap_ms}
            for s in endpoint.secrets
            if s["expires_at"] is None or s["expires_at"] > now
        ][:9]
        secret = new_secret()
        endpoint.secrets = [{"sealed": self.box.seal(secret, endpoint.id), "expires_at": None}]
        endpoint.secrets += kept
        await self.redis.hset(endpoint_key(endpoint.id), "secrets", json.dumps(endpoint.secrets))
        return secret

    def signing_secrets(self, endpoint: Endpoint) -> list[str]:
        """The secrets that sign now: the current one and any still in their overlap."""
        now = now_ms()
        return [
            self.box.open(s["sealed"], endpoint.id)
            for s in endpoint.secrets
            if s["expires_at"] is None or s["expires_at"] > now
        ]

    async def _health(self, endpoint: Endpoint, outcome: str, reason: str = "") -> int:
        answer = await ENDPOINT_HEALTH(
            self.redis,
            HealthKeys(endpoint=endpoint_key(endpoint.id), disabled_total=DISABLED_TOTAL_KEY),
            HealthArgs(outcome=outcome, now_ms=now_ms(), reason=reason),
        )
        return int(answer)

    async def delivered(self, endpoint: Endpoint) -> None:
        """An attempt succeeded: the endpoint is healthy again."""
        if endpoint.failing_since is not None:
            await self._health(endpoint, "ok")

    async def failing_since(self, endpoint: Endpoint) -> int | None:
        """An attempt failed: since when every attempt has failed (None: it was deleted)."""
        since = await self._health(endpoint, "failing")
        return None if since < 0 else since

    async def disable(self, endpoint: Endpoint, reason: str) -> None:
        """Stop delivering to the endpoint (410 Gone, or failing for too long)."""
        if await self._health(endpoint, "disable", reason) < 0:
            return
        metrics.WEBHOOK_ENDPOINTS_DISABLED.inc()
        log.warning(
            "webhook endpoint %s disabled: %s",
            endpoint.id,
            reason,
            extra={"account": endpoint.account, "endpoint_id": endpoint.id},
        )
