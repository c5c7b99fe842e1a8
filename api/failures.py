"""Failed key checks, counted per client address in Redis, across API processes.

A wrong bearer key and a failed dashboard login each count one failure for the client's
address (an IPv6 address by its /64, what one host is usually given) in a one-minute
window; past `AUTH_FAILURES_PER_MINUTE`, the refusal is a 429 with `Retry-After` (the
rest of the window) instead of a 401. A good key is never counted and never waits: the
check happens only once a key has failed. The address is the one uvicorn reports (behind a
proxy, start it with `--forwarded-allow-ips` so that is the client's).

    lr:authfail:<address>   string: failures in the current window; expires with it
"""

from __future__ import annotations

import ipaddress
import logging
import math

from fastapi import Request

from jobs.engine.keys import domain_key

WINDOW_S = 60
log = logging.getLogger("api.failures")


def client_bucket(address: str | None) -> str:
    """What failures are counted under: the address, or its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False).network_address) + "/64"
    return str(parsed)


def failure_key(address: str | None) -> str:
    """The Redis key that counts failures from this address."""
    return domain_key("authfail", client_bucket(address))


async def count_failure(request: Request) -> int | None:
    """Count a failed key check from the request's client; the seconds it must wait when
    it is over its limit, else None. Redis being away counts nothing (the request is
    refused either way)."""
    limit = request.app.state.settings.auth_failures_per_minute
    key = failure_key(request.client.host if request.client else None)
    try:
        async with request.app.state.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S, nx=True)
            pipe.pttl(key)
            count, _, ttl_ms = await pipe.execute()
    except Exception:
        log.warning("a failed key check could not be counted", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, math.ceil(max(ttl_ms, 0) / 1000))
