"""Wake an idle worker the moment a job is enqueued, instead of at its next poll.

arq's worker looks for due jobs every `poll_delay` (`WORKER_POLL_DELAY_SECONDS`), so an
idle worker starts a new job on average half a poll after it was enqueued, and a shorter
poll costs CPU all day long. Our enqueue script (`lua/enqueue.lua`) also PUBLISHes on
`lr:wake:<queue>`; every worker listens there and ends its poll sleep early.

arq has no hook for this: `Worker.main` loops `async for _ in poll(self.poll_delay_s)` over
the module-level `arq.worker.poll` generator, and the arq CLI builds `arq.worker.Worker`
itself, so a subclass is not an option. `install()` puts `wakeable_poll` in its place. It
behaves exactly like arq's `poll` unless the task running it has a wake event, which our
`on_startup` sets: arq awaits `on_startup` in the same task, just before its poll loop.
Checked against arq 0.28.0 (`Worker.main`); tests/test_wakeup.py fails if a later arq stops
calling `arq.worker.poll`. Jobs that become due later (retries, deferred deliveries) still
start at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextvars import ContextVar

import arq.worker
from redis.asyncio import Redis

log = logging.getLogger("jobs.wakeup")

WAKE_PREFIX = "lr:wake:"
# Set by `on_startup` in the task that then runs arq's poll loop (None: plain polling).
_WAKE: ContextVar[asyncio.Event | None] = ContextVar("worker_wake", default=None)
_LISTEN_TIMEOUT_S = 30.0


def wake_channel(queue_name: str) -> str:
    """The pub/sub channel an enqueue into `queue_name` is announced on."""
    return f"{WAKE_PREFIX}{queue_name}"


async def wakeable_poll(step: float = 0.5) -> AsyncGenerator[float, None]:
    """arq's `poll(step)`: yield, then sleep the rest of `step`; the sleep ends early when
    this task's wake event is set."""
    loop = asyncio.get_running_loop()
    wake = _WAKE.get()
    start = loop.time()
    while True:
        before = loop.time()
        yield before - start
        wait = max(0.0, step - (loop.time() - before))
        if wake is None:
            await asyncio.sleep(wait)
            continue
        if wake.is_set():
            await asyncio.sleep(0)
        else:
            try:
                async with asyncio.timeout(wait):
                    await wake.wait()
            except TimeoutError:
                pass
        # Cleared before the next look at the queue: a wake-up that comes during it is
        # kept for the one after, so none is lost.
        wake.clear()


def install() -> None:
    """Make arq's worker loop use `wakeable_poll` (idempotent)."""
    arq.worker.poll = wakeable_poll  # type: ignore[attr-defined]


def current_wake() -> asyncio.Event | None:
    """The wake event of the worker loop this runs in (None: plain polling)."""
    return _WAKE.get()


def wake_this_worker() -> asyncio.Event:
    """The wake event of the worker whose `on_startup` calls this, in its task."""
    event = asyncio.Event()
    _WAKE.set(event)
    return event


async def keep_listening(redis: Redis, queue_name: str, wake: asyncio.Event) -> None:
    """Set `wake` at every enqueue announced for `queue_name`, until cancelled; a lost
    connection is logged and subscribed again (the worker polls meanwhile)."""
    channel = wake_channel(queue_name)
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            wake.set()  # whatever was enqueued while nobody listened
            while True:
                if await pubsub.get_message(timeout=_LISTEN_TIMEOUT_S) is not None:
                    wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("wake-up channel lost; polling until it is back", exc_info=True)
            await asyncio.sleep(1)
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                log.debug("closing the wake-up subscription failed", exc_info=True)
