"""One Redis pub/sub connection per API process, shared by every job event stream.

A stream per connection would hold one connection of the Redis pool for as long as a
client watches a job: a few hundred watchers would starve every other request. Here
each stream registers interest in its job's channel; one reader task subscribes to the
channels someone watches and wakes their streams when a message comes. After a Redis
outage every stream is woken, so each reads its job again and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

log = logging.getLogger("api.events")
_READ_TIMEOUT_S = 1.0


class JobEvents:
    """Wakes the streams watching a channel whenever something is published on it."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pubsub: PubSub | None = None
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._subscribed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the reader task (FastAPI's lifespan)."""
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        # Connected now: streams that subscribe at the same moment must not each take a
        # connection of their own (redis-py connects a PubSub on its first command).
        await self._pubsub.connect()
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        """Stop the reader and release the connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """An event set at each message on `channel` while the block runs."""
        assert self._pubsub is not None, "JobEvents.start() was not called"
        woken = asyncio.Event()
        first = not self._watchers[channel]
        self._watchers[channel].add(woken)
        try:
            if first:
                await self._pubsub.subscribe(channel)
            self._subscribed.set()
            yield woken
        finally:
            self._watchers[channel].discard(woken)
            if not self._watchers[channel]:
                del self._watchers[channel]
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel)

    def watching(self) -> int:
        """How many streams are open."""
        return sum(len(w) for w in self._watchers.values())

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            if not self._pubsub.subscribed:
                self._subscribed.clear()
                await self._subscribed.wait()
                continue
            try:
                message = await self._pubsub.get_message(timeout=_READ_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis went away; redis-py subscribes again when it reconnects. Whatever
                # was published meanwhile is lost, so every stream looks at its job again.
                log.warning("job event subscription lost; reconnecting", exc_info=True)
                self._wake_all()
                await asyncio.sleep(_READ_TIMEOUT_S)
                continue
            if message and message.get("type") == "message":
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                for woken in self._watchers.get(name, ()):
                    woken.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for woken in watchers:
                woken.set()
