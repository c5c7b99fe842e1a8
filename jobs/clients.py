"""Create and close the process's clients: one Redis pool and one S3 client.

Called from FastAPI's lifespan and arq's `on_startup`; never at import time.

`redis_pool` is the one Redis connection factory: the API's client, the worker's (arq's
pool, through the arq adapter), the wake-up listener and the event streams' pub/sub all
draw their connections from a pool it made. With `REDIS_SENTINELS` each connection asks
the Sentinels for the primary when it connects, and drops itself when that node turns
out to be a replica (`READONLY`), so every user follows a failover without a restart;
without, it connects to `REDIS_URL`. Either way a command is retried while Redis is
unreachable (`redis_retry`).
"""

from __future__ import annotations

import gc
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.errors import TransientError
from jobs.settings import Settings

# Connection refused, reset, or `LOADING` (BusyLoadingError is a ConnectionError) and timeouts.
REDIS_RETRY_ON: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]
# redis-py retries a refused connect only when its Retry lists the raw OSError as well.
_RETRY_CONNECT_ON = (*REDIS_RETRY_ON, OSError)
_BACKOFF_BASE_S, _BACKOFF_CAP_S = 0.05, 1.0


def redis_retry(settings: Settings) -> Retry:
    """Retry a Redis command for about `REDIS_RETRY_SECONDS` while Redis is unreachable.

    Without it, a Redis restart fails every request in flight and makes arq's poll loop
    raise, which ends the worker process.
    """
    ramp, waited, retries = 1, 0.0, 0
    while waited < settings.redis_retry_seconds:
        waited += min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**ramp)
        ramp, retries = ramp + 1, retries + 1
    return Retry(
        ExponentialBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S), retries, _RETRY_CONNECT_ON
    )


async def _connect_once(conn: SentinelManagedConnection, address: tuple[str, int]) -> None:
    # redis-py retries a connect to the address it was given, with the connection's own
    # Retry: ~REDIS_RETRY_SECONDS against the dead primary before asking the Sentinels
    # again. One try here; the caller's Retry asks the Sentinels before each next try.
    retry, conn.retry = conn.retry, Retry(NoBackoff(), 0)
    try:
        await SentinelManagedConnection.connect_to(conn, address)
    finally:
        conn.retry = retry


class FailoverConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name, asked again at every connect try."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        """Connect to `address` once (see `_connect_once`)."""
        await _connect_once(self, address)


class FailoverSSLConnection(SentinelManagedSSLConnection):
    """`FailoverConnection` over TLS."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        """Connect to `address` once (see `_connect_once`)."""
        await _connect_once(self, address)


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (connections find the primary through the Sentinels) that
    blocks, like `BlockingConnectionPool`, when every connection is busy."""


def _connection_options(settings: Settings) -> dict[str, Any]:
    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "health_check_interval": 15,
        "retry": redis_retry(settings),
        "retry_on_error": list(REDIS_RETRY_ON),
    }


def redis_pool(settings: Settings) -> BlockingConnectionPool:
    """The process's Redis connection pool: through `REDIS_SENTINELS` when set, else
    `REDIS_URL`; timeouts, and commands retried for `REDIS_RETRY_SECONDS`.

    The pool blocks when all its connections are busy: a burst of more concurrent requests
    than connections waits its turn instead of failing ("Too many connections").
    """
    size = {"max_connections": 200, "timeout": max(5.0, settings.redis_retry_seconds)}
    if not settings.redis_sentinels:
        return BlockingConnectionPool.from_url(
            settings.redis_url, **size, **_connection_options(settings)
        )
    # REDIS_URL gives the database and credentials; the Sentinels give the address.
    url = parse_url(settings.redis_url)
    tls = url.pop("connection_class", None) is SSLConnection
    for address in ("host", "port", "path"):
        url.pop(address, None)
    sentinels = Sentinel(
        settings.redis_sentinels,
        sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 2},
    )
    return BlockingSentinelConnectionPool(
        settings.redis_sentinel_master,
        sentinels,
        connection_class=FailoverSSLConnection if tls else FailoverConnection,
        **size,
        **url,
        **_connection_options(settings),
    )


def create_redis(settings: Settings) -> Redis:
    """A Redis client on a new `redis_pool`."""
    return Redis(connection_pool=redis_pool(settings))


async def wait_for_replicas(conn: Redis, settings: Settings) -> None:
    """With `REDIS_MIN_REPLICAS`, wait (Redis `WAIT`, at most `REDIS_REPLICA_TIMEOUT_SECONDS`)
    until that many replicas hold every write made so far on `conn`, a single-connection
    client (`WAIT` counts the writes of its own connection). Too few: `TransientError`
    (503): the write is on the primary but might not survive a failover."""
    wanted = settings.redis_min_replicas
    if not wanted:
        return
    acked = await conn.wait(wanted, int(settings.redis_replica_timeout_seconds * 1000))
    if acked < wanted:
        raise TransientError(
            f"the write reached {acked} of the {wanted} Redis replicas it needs",
            type="replicas_unavailable",
            retry_after=max(1.0, settings.redis_replica_timeout_seconds),
        )


def freeze_startup_heap() -> None:
    """Put every object made so far out of the garbage collector's sight; called once the
    process has started. The modules, botocore's service models and the app live as long
    as the process, and a full collection walking them paused a busy API for ~100 ms (its
    slowest 1% of requests) and cost it a third of its enqueue rate."""
    gc.freeze()
