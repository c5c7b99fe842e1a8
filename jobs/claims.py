"""Claim arq jobs in one Redis round trip per poll, and survive Redis going away meanwhile;
skip arq's own finish of a job whose final record already did it.

arq's `Worker.start_jobs` claims the due jobs one at a time, each with WATCH on its
in-progress key, EXISTS, ZSCORE and MULTI/PSETEX/EXEC: four round trips per job, on the
event loop the running jobs share. A worker that finds 200 due jobs spends seconds handing
them out (a burst of I/O-bound analyses started over 2.5-4.8 s on this machine), and the
claims are a fifth of a busy worker's CPU. `start_jobs_batched` takes every free slot at
once and claims that many jobs with one script (`lua/claim.lua`: the same test and the
same in-progress key as arq, so arq's own workers and ours can share a queue), then starts
them exactly as arq does.

A Redis failure during the claim (a restart: redis-py cannot retry a script whose effect
it does not know) ends this poll iteration instead of the worker process, as arq's own
WATCH claim would have: the slots are given back and the jobs stay queued for a later poll.

A job that ends `succeeded` gets its final record and arq's end of the job (queue entry,
job, in-progress and retry keys: what arq's `finish_job` deletes) in one script
(`lua/finish.lua`), so `finish_job_unless_recorded` skips arq's pipeline for it.

arq has no hook for this and the arq CLI builds `arq.worker.Worker` itself, so the methods
are replaced on the class, as `jobs/wakeup.py` does for arq's poll loop. Checked against
arq 0.28.0 (`Worker.start_jobs`, `run_job`, `finish_job`,
`_release_sem_dec_counter_on_complete`);
tests/test_claims.py fails if the shape changes.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from importlib import resources
from typing import Any

import arq.worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from jobs.wakeup import current_wake

log = logging.getLogger("jobs.claims")

_CLAIM_SOURCE = resources.files("jobs").joinpath("lua/claim.lua").read_text()
CLAIM_ERRORS = (WatchError, RedisConnectionError, RedisTimeoutError)


async def _take_slots(worker: Any, wanted: int) -> int:
    """Wait for one free slot, as arq does, then take every other slot free now (up to
    `wanted` and to `max_jobs` running); 0 when the worker is full."""
    await worker.sem.acquire()
    taken = 1
    while taken < wanted and not worker.sem.locked():
        await worker.sem.acquire()  # free: returns without yielding
        taken += 1
    room = max(0, worker.max_jobs - worker.job_counter)
    for _ in range(taken - min(taken, room)):
        worker.sem.release()
    return min(taken, room)


def _give_back(worker: Any, slots: int) -> None:
    worker.job_counter -= slots
    for _ in range(slots):
        worker.sem.release()


async def start_jobs_batched(self: Any, job_ids: list[bytes]) -> None:
    """arq's `start_jobs`, claiming as many jobs per round trip as there are free slots."""
    script = getattr(self, "_longrun_claim", None)
    if script is None:
        script = self._longrun_claim = self.pool.register_script(_CLAIM_SOURCE)
    wake = current_wake()
    pending = [job_id.decode() for job_id in job_ids]
    # Due jobs were left behind (the read was full, or this worker filled up): the next poll
    # comes as soon as a job ends, not a poll delay later. A full worker of quick jobs would
    # otherwise idle for most of each `WORKER_POLL_DELAY_SECONDS`.
    self._longrun_backlog = len(job_ids) >= self.queue_read_limit
    while pending:
        slots = await _take_slots(self, len(pending))
        if slots == 0:
            self._longrun_backlog = True
            return
        self.job_counter += slots
        ttl_ms = int(self.in_progress_timeout_s * 1000)
        try:
            answer = await script(
                keys=[self.queue_name],
                args=[timestamp_ms(), ttl_ms, in_progress_key_prefix, slots, *pending],
            )
        except CLAIM_ERRORS as exc:
            _give_back(self, slots)
            log.warning("a job claim failed on a Redis error; trying at the next poll: %s", exc)
            return
        examined, claimed = int(answer[0]), answer[1:]
        pending = pending[examined:]
        _give_back(self, slots - len(claimed) // 2)  # started elsewhere, or no longer due
        for i in range(0, len(claimed), 2):
            job_id = claimed[i].decode()
            task = self.loop.create_task(self.run_job(job_id, int(float(claimed[i + 1]))))
            task.add_done_callback(partial(_job_done, self, wake))
            self.tasks[job_id] = task


def _job_done(worker: Any, wake: asyncio.Event | None, _task: asyncio.Task[Any]) -> None:
    worker._release_sem_dec_counter_on_complete()
    if wake is not None and worker._longrun_backlog:
        wake.set()


_finish_job = arq.worker.Worker.finish_job


async def finish_job_unless_recorded(
    self: Any,
    job_id: str,
    finish: bool,
    result_data: bytes | None,
    result_timeout_s: float | None,
    keep_result_forever: bool,
    incr_score: int | None,
    keep_in_progress: float | None,
) -> None:
    """arq's `finish_job`, skipped for a job whose final record already did the same (its
    queue entry, job, in-progress and retry keys are gone): one round trip less a job."""
    deps = self.ctx.get("deps") if self.ctx else None
    if deps is not None and job_id in deps.arq_finished:
        deps.arq_finished.discard(job_id)
        if finish and result_data is None and keep_in_progress is None:
            return
    await _finish_job(
        self, job_id, finish, result_data, result_timeout_s, keep_result_forever,
        incr_score, keep_in_progress,
    )  # fmt: skip


def install() -> None:
    """Replace arq's `Worker.start_jobs` with `start_jobs_batched` and its `finish_job`
    with `finish_job_unless_recorded` (idempotent)."""
    arq.worker.Worker.start_jobs = start_jobs_batched  # type: ignore[method-assign]
    arq.worker.Worker.finish_job = finish_job_unless_recorded  # type: ignore[method-assign]
