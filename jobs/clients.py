"""Create and close the process's clients: one Redis pool and one S3 client.

Called from FastAPI's lifespan and arq's `on_startup`; never at import time.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from jobs.settings import Settings


def json_dumps(value: Any) -> bytes:
    """arq's job and result serializer: JSON, never pickle."""
    return json.dumps(value, separators=(",", ":")).encode()


def json_loads(raw: bytes) -> Any:
    """arq's job and result deserializer: JSON, never pickle."""
    return json.loads(raw)


def create_redis(settings: Settings) -> Redis:
    """A Redis connection pool with timeouts, so a dead server fails fast instead of hanging."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=15,
        retry_on_timeout=True,
        max_connections=200,
    )
