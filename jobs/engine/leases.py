"""Worker leases: heartbeats, fast recovery of a dead worker's jobs, and fencing.

Each worker beats every quarter of `WORKER_LEASE_SECONDS`; the beat also renews
arq's claim on each job it runs, so a job that runs for an hour is never taken
by a second worker while its own lives. A reaper in every worker looks for
workers whose last beat is older than `DEAD_AFTER` of a lease and releases their
jobs, which are still in arq's queue, so a live worker starts them at once and
a dead worker's job starts again within one lease (arq alone waits
`job_timeout + 10 s`). A job whose runs keep killing their worker is
dead-lettered at the crash cap. A worker that was only stalled, and finds on
its next beat that it was declared dead, stops its jobs without writing their
outcome: they belong to another worker now.

A Redis outage silences every worker's beat at once, so right after one every live
worker looks dead. A worker whose own Redis calls failed (`RedisHealth`, shared by its
heartbeat and its reaper) therefore reaps nobody for one lease after its last failure:
by then the others have beaten again, and only the truly dead are still silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jobs.engine.outbox import requeue_outbox
from jobs.engine.runner import log_dead_letter
from jobs.engine.store import JobStore

log = logging.getLogger("jobs.leases")

# Declared dead this far into a lease (3.2 missed beats), which leaves the rest of the lease
# for the reaper's pass and a live worker's next poll: restarted within one lease.
DEAD_AFTER = 0.8
BEATS_PER_LEASE = 4


class RedisHealth:
    """When this worker last failed to reach Redis, as its heartbeat and its reaper saw it:
    a call that raised, or one that took longer than a beat's interval (it was retrying
    through an outage, however it ended)."""

    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = lease_s
        self.clock = clock
        self.last_failure: float | None = None

    @property
    def slow_s(self) -> float:
        """A Redis call longer than this is counted as a failure."""
        return max(0.1, self.lease_s / BEATS_PER_LEASE)

    def failed(self) -> None:
        """Record a failure now."""
        self.last_failure = self.clock()

    def took(self, started: float) -> None:
        """Record a failure if a call begun at `started` (this clock) was slow."""
        if self.clock() - started > self.slow_s:
            self.failed()

    def may_reap(self) -> bool:
        """False for one lease after this worker's own last Redis failure."""
        return self.last_failure is None or self.clock() - self.last_failure >= self.lease_s


async def keep_beating(
    store: JobStore,
    worker_id: Callable[[], str],
    running: Callable[[], list[str]],
    lease_s: float,
    on_fenced: Callable[[], None],
    health: RedisHealth | None = None,
) -> None:
    """Beat every quarter of a lease until cancelled; a Redis outage is logged, not fatal
    (and recorded in `health`). Each beat also hands back the runs this worker holds but no
    longer runs (their outcome could not be recorded)."""
    health = health or RedisHealth(lease_s)
    while True:
        started = health.clock()
        try:
            if not await store.beat(worker_id()):
                log.error("worker %s was declared dead while alive; fencing it", worker_id())
                on_fenced()
            else:
                idle_ms = int(lease_s * 1000)
                released = await store.release_unrecorded(worker_id(), set(running()), idle_ms)
                if released:
                    log.warning(
                        "jobs whose outcome was never recorded were handed back: %s", released
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            health.failed()
            log.warning("heartbeat failed; retrying", exc_info=True)
        else:
            health.took(started)
        await asyncio.sleep(max(0.1, lease_s / BEATS_PER_LEASE))


async def reap_once(
    store: JobStore, lease_s: float, crash_cap: int, health: RedisHealth | None = None
) -> dict[str, str]:
    """Release the jobs of every worker whose lease lapsed; returns job id -> outcome.
    Nothing while `health` says this worker itself lost Redis within the last lease."""
    outcomes: dict[str, str] = {}
    started = health.clock() if health else 0.0
    silent = await store.dead_workers(lease_s * DEAD_AFTER)
    if health is not None:
        health.took(started)
        if silent and not health.may_reap():
            log.info("not reaping %s: this worker lost Redis within the last lease", silent)
            return outcomes
    for dead in silent:
        # Before the worker is forgotten, so a reaper that dies here finds it again.
        await requeue_outbox(store.redis, dead)
        released = await store.reap_worker(dead, crash_cap)
        if released:
            log.warning(
                "worker %s missed its lease; its jobs were handed on",
                dead,
                extra={"jobs": released},
            )
        for job_id, outcome in released.items():
            record = await store.get(job_id) if outcome == "dead" else None
            if record is not None and record.error and store.policy(record.kind).dead_letters:
                log_dead_letter(record, record.error)
        outcomes.update(released)
    return outcomes


async def keep_reaping(
    store: JobStore, lease_s: float, crash_cap: int, health: RedisHealth | None = None
) -> None:
    """Run `reap_once` several times a lease until cancelled; errors are logged (and
    recorded in `health`, shared with the heartbeat)."""
    health = health or RedisHealth(lease_s)
    while True:
        try:
            await reap_once(store, lease_s, crash_cap, health)
        except asyncio.CancelledError:
            raise
        except Exception:
            health.failed()
            log.exception("reaper pass failed; will try again")
        await asyncio.sleep(max(0.1, min(0.5, lease_s / 5)))
