"""Everything the service knows of arq lives here: its imports, its key names, its job
payload, and the parts of its worker we replace.

arq (0.28.0, in maintenance mode) still runs the worker: the `arq` CLI, signal handling,
the drain on SIGTERM (`job_completion_wait`), per-job timeouts and aborts, JSON job
payloads. What it does not do well is replaced in `LongrunWorker`, a subclass:

- **Claims.** arq takes the oldest due jobs, one by one, each with WATCH/EXISTS/ZSCORE/
  MULTI/EXEC (four round trips a job, on the loop the jobs share). `_claim` takes every
  free slot at once and asks the engine's fair scheduler (`ctx["scheduler"]`) for that many
  jobs, in one script: accounts take turns, whatever their backlogs. arq's in-progress key
  is not used: a job is claimed by leaving the scheduler's queue.
- **Outcomes.** The engine's runner records every outcome in the job record, and the same
  script ends arq's job (queue entry, payload, in-progress and retry keys) or schedules
  its next attempt. So `finish_job` does nothing for our jobs: arq never decides.
- **Polling.** arq sleeps `poll_delay` between looks at the queue. `_poll_iteration` waits
  on the engine's wake-up instead (an enqueue, a job ending while due jobs wait), with the
  poll delay as a ceiling; arq's own poll delay is 0 so its loop adds no sleep.
- **Redis outages and failovers.** arq's main loop raises on a Redis error and the worker
  exits (also on a Sentinel failover: connection refused, `READONLY` from the demoted
  primary, no primary known to the Sentinels yet). `_poll_iteration` logs it and tries
  again at the next poll. arq's own Sentinel client passes neither retries nor pool
  limits; the worker is given its pool instead (`redis_client`, on `jobs.clients.
  redis_pool`), the same the API uses, so every connection follows the promoted replica.

The arq CLI builds `arq.worker.Worker` in `create_worker` and has no setting for the
class, so `use_longrun_worker()` points that one name at `LongrunWorker`; it is called
when the CLI reads `jobs.worker.WorkerSettings`, and nowhere else. Checked against arq
0.28.0 (`Worker._poll_iteration`, `run_job`, `finish_job`, `_cancel_aborted_jobs`,
`heart_beat`, `_release_sem_dec_counter_on_complete`); `tests/test_arq_adapter.py` fails
if those shapes change.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import arq.worker
from arq.connections import ArqRedis, RedisSettings
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.worker import Function, func
from redis.exceptions import RedisError

from jobs.clients import REDIS_RETRY_ON, redis_pool, redis_retry
from jobs.engine.scheduler import Scheduler
from jobs.settings import Settings

log = logging.getLogger("jobs.engine.arq")

ABORT_KEY = abort_jobs_ss
# Attempts are counted and capped by the job record; arq's own cap must never bite first.
UNLIMITED_TRIES = 1_000_000

Hook = Callable[[dict[str, Any]], Awaitable[None]]
Entry = Callable[[dict[str, Any], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ArqJobKeys:
    """arq's keys for one job."""

    job: str
    in_progress: str
    retry: str


def job_keys(job_id: str) -> ArqJobKeys:
    return ArqJobKeys(
        job=job_key_prefix + job_id,
        in_progress=in_progress_key_prefix + job_id,
        retry=retry_key_prefix + job_id,
    )


def job_payload(function: str, job_id: str, enqueue_ms: int) -> str:
    """arq's job payload, as JSON: the function (our job kind) with the job id as its one
    argument. What arq's `deserialize_job_raw` reads back."""
    payload = {"t": None, "f": function, "a": [job_id], "k": {}, "et": enqueue_ms}
    return json.dumps(payload, separators=(",", ":"))


def json_dumps(value: Any) -> bytes:
    """arq's job and result serializer: JSON, never pickle."""
    return json.dumps(value, separators=(",", ":")).encode()


def json_loads(raw: bytes) -> Any:
    """arq's job and result deserializer: JSON, never pickle."""
    return json.loads(raw)


class LongrunWorker(arq.worker.Worker):
    """arq's worker with fair batched claims, outcomes recorded by the engine, wake-ups
    instead of a fixed poll, and a main loop that survives Redis outages. The engine's
    `on_startup` puts the worker's settings, scheduler and wake event in its ctx."""

    _backlog: bool = False

    async def _poll_iteration(self) -> None:
        try:
            if self.allow_pick_jobs and self.job_counter < self.max_jobs:
                await self._claim()
            if self.allow_abort_jobs:
                await self._cancel_aborted_jobs()
            await self.heart_beat()
        except (RedisError, OSError) as exc:
            # Unreachable, a failover under way (READONLY, NOREPLICAS, no primary yet), or
            # any other Redis refusal: never the end of the worker.
            log.warning("Redis failed the poll (%s); polling again shortly", exc)
        self._forget_finished_tasks()
        await self._wait_for_work()

    def _forget_finished_tasks(self) -> None:
        for job_id, task in list(self.tasks.items()):
            if not task.done():
                continue
            del self.tasks[job_id]
            # arq re-raises here, which ends the worker; a run that raised (Redis gone before
            # the job started) leaves the job to its lease and the reconciler instead.
            if not task.cancelled() and task.exception() is not None:
                log.error("job %s: arq's run failed", job_id, exc_info=task.exception())

    async def _wait_for_work(self) -> None:
        settings: Settings | None = self.ctx.get("settings")
        wake: asyncio.Event | None = self.ctx.get("wake")
        delay = settings.worker_poll_delay_seconds if settings else 0.5
        if wake is None:
            await asyncio.sleep(delay)
            return
        if not wake.is_set():
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass
        # Cleared before the next look at the queue: a wake-up during it is kept.
        wake.clear()

    async def _take_free_slots(self) -> int:
        """Take every free slot (arq's semaphore and job counter) without waiting for one."""
        taken = 0
        while self.job_counter + taken < self.max_jobs and not self.sem.locked():
            await self.sem.acquire()  # free: returns without yielding
            taken += 1
        self.job_counter += taken
        return taken

    def _give_back(self, slots: int) -> None:
        self.job_counter -= slots
        for _ in range(slots):
            self.sem.release()

    async def _claim(self) -> None:
        scheduler: Scheduler | None = self.ctx.get("scheduler")
        slots = await self._take_free_slots()
        if scheduler is None or slots == 0:
            self._give_back(slots)
            return
        try:
            claimed = await scheduler.claim(slots)
        except (RedisError, OSError) as exc:
            # A claim cut off by a restart: redis-py cannot retry a script whose effect it
            # does not know. A claim that did happen is put back by the reconciler.
            self._give_back(slots)
            log.warning("a job claim failed on a Redis error; trying at the next poll: %s", exc)
            return
        self._give_back(slots - len(claimed))
        # Every slot found a job: more may be due, so a job ending wakes the next poll
        # rather than the poll delay.
        self._backlog = len(claimed) == slots
        for job_id, due in claimed:
            task = self.loop.create_task(self.run_job(job_id, due))
            task.add_done_callback(self._job_done)
            self.tasks[job_id] = task

    def _job_done(self, _task: asyncio.Task[Any]) -> None:
        self._release_sem_dec_counter_on_complete()
        wake: asyncio.Event | None = self.ctx.get("wake")
        if wake is not None and self._backlog:
            wake.set()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """Nothing to do: the engine's runner recorded the outcome and, in the same step,
        ended arq's job or scheduled its next attempt (arq's `finish_failed_job`, for the
        jobs arq gives up on before they run, still cleans up; the reconciler then fails
        their records)."""


def use_longrun_worker() -> None:
    """Make the arq CLI build `LongrunWorker` (see the module docstring); idempotent."""
    arq.worker.Worker = LongrunWorker  # type: ignore[misc]


def function(name: str, entry: Entry) -> Function:
    """An arq function that runs `entry(ctx, job_id)` under a job kind's name."""

    async def run(ctx: dict[str, Any], job_id: str) -> None:
        await entry(ctx, job_id)

    run.__qualname__ = run.__name__ = f"run_{name.replace('.', '_')}"
    return func(run, name=name, max_tries=UNLIMITED_TRIES)


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings (`arq --check` uses them; the worker gets `redis_client`):
    `REDIS_URL`, or the primary through `REDIS_SENTINELS`, retried through a restart."""
    base = replace(
        RedisSettings.from_dsn(settings.redis_url),
        retry=redis_retry(settings),
        retry_on_error=list(REDIS_RETRY_ON),
    )
    if not settings.redis_sentinels:
        return base
    return replace(
        base,
        host=list(settings.redis_sentinels),
        sentinel=True,
        sentinel_master=settings.redis_sentinel_master,
    )


def redis_client(settings: Settings) -> ArqRedis:
    """arq's client for the worker and tools, on the process's one kind of pool
    (`jobs.clients.redis_pool`); connects on first use."""
    return ArqRedis(
        redis_pool(settings),
        job_serializer=json_dumps,
        job_deserializer=json_loads,
        default_queue_name=settings.queue_name,
        expires_extra_ms=settings.job_retention_seconds * 1000,
    )


def worker_arguments(
    settings: Settings,
    kinds: Sequence[str],
    entry: Callable[[str], Entry],
    on_startup: Hook,
    on_shutdown: Hook,
) -> dict[str, Any]:
    """arq Worker arguments: one function per job kind (`entry(kind)` runs an attempt)."""
    return {
        "functions": [function(kind, entry(kind)) for kind in kinds],
        "redis_settings": redis_settings(settings),
        "redis_pool": redis_client(settings),
        "queue_name": settings.queue_name,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        "max_jobs": settings.worker_concurrency,
        # Running jobs stay at the head of arq's queue: a poll reads past them.
        "queue_read_limit": max(100, 2 * settings.worker_concurrency),
        "job_timeout": settings.job_timeout_seconds,
        # On SIGTERM: stop taking jobs, let running ones finish for this long, then hand
        # the rest back (the runner gives their attempt back).
        "job_completion_wait": settings.worker_drain_seconds,
        "max_tries": UNLIMITED_TRIES,
        # The record holds every outcome; an arq result would only block the job id.
        "keep_result": 0,
        # LongrunWorker waits for work itself (wake-ups, at most the poll delay).
        "poll_delay": 0,
        "allow_abort_jobs": True,
        "expires_extra_ms": settings.job_retention_seconds * 1000,
        "health_check_interval": 60,
    }


async def connect(settings: Settings) -> ArqRedis:
    """arq's Redis client for these settings, checked with a PING (tests and tools)."""
    client = redis_client(settings)
    await client.ping()
    return client


def build_worker(arguments: dict[str, Any], **overrides: Any) -> LongrunWorker:
    """A worker from `worker_arguments` (tests and tools; the CLI builds its own)."""
    return LongrunWorker(**{**arguments, **overrides})
