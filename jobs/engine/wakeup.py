"""Wake an idle worker the moment there is work, instead of at its next poll.

A worker looks for due jobs at most every `WORKER_POLL_DELAY_SECONDS`. An enqueue, a job
handed back or released for now, and a reaper's release PUBLISH on `lr:wake:<queue>`
(in the same Lua step); every worker listens there and sets its wake event, which ends
its wait for the next poll (`LongrunWorker._wait_for_work`). Jobs that become due later
(retries, deferred deliveries) start at the next poll.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from jobs.engine import keys

log = logging.getLogger("jobs.engine.wakeup")
_LISTEN_TIMEOUT_S = 30.0


async def keep_listening(redis: Redis, queue_name: str, wake: asyncio.Event) -> None:
    """Set `wake` at every wake-up announced for `queue_name`, until cancelled; a lost
    connection is logged and subscribed again (the worker polls meanwhile)."""
    channel = keys.wake(queue_name)
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
