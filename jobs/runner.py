"""Our job layer over arq: how one attempt of a job runs and how its outcome is recorded.

Every arq function the worker registers is `run_attempt` bound to a `JobKind`.
arq passes only the job id; the kind's handler gets the record's arguments
and a `JobRun` to report progress. The outcome is written to the record
before arq sees it: success, `Retry(defer=...)` for a transient failure with
tries left, or a final failure with a dead letter. arq itself never decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from arq import Retry
from arq.worker import Function, RetryJob, func
from redis.asyncio import Redis

from jobs import metrics
from jobs.deps import WorkerDeps
from jobs.errors import JobTimedOut
from jobs.logs import JOB_CONTEXT_VAR, REQUEST_ID_VAR
from jobs.records import Busy, JobRecord, JobState, JobStore, now_ms, record_key
from jobs.retry import decide

log = logging.getLogger("jobs.runner")


class WorkerContext(TypedDict, total=False):
    """arq's `ctx` as this service fills it."""

    redis: Redis
    deps: WorkerDeps
    job_id: str
    job_try: int


@dataclass
class JobRun:
    """What a handler gets besides its arguments: who it runs for, progress reporting,
    and its soft time limit."""

    deps: WorkerDeps
    record: JobRecord
    soft_limit: asyncio.Event = field(default_factory=asyncio.Event)
    soft_deadline: float = 0.0

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def account(self) -> str:
        return self.record.account

    @property
    def attempt(self) -> int:
        return self.record.attempt

    def time_left(self) -> float:
        """Seconds until the soft time limit, when the job is cancelled to clean up."""
        return max(0.0, self.soft_deadline - time.monotonic())

    async def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report progress (0..1) and a short stage name; shown by the status API."""
        await self.deps.store.set_progress(self.job_id, min(1.0, max(0.0, fraction)), stage)


Handler = Callable[[JobRun, dict[str, Any]], Awaitable[Any]]


class HandBack(Exception):
    """Raised by a handler that cannot make progress on this worker now (e.g. it waited
    too long for a shared slot): the job goes back to the queue for `defer_s`, and the
    attempt does not count as a try or a failure."""

    def __init__(self, reason: str, defer_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer_s = defer_s


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its name (also the arq function name) and its handler."""

    name: str
    handler: Handler


def _attempt_entry(record: JobRecord, started: int, outcome: str, **extra: Any) -> dict[str, Any]:
    finished = now_ms()
    return {
        "attempt": record.attempt,
        "started_at": started,
        "finished_at": finished,
        "duration_ms": finished - started,
        "worker": record.worker,
        "outcome": outcome,
        **extra,
    }


async def run_attempt(ctx: WorkerContext, kind: JobKind, job_id: str) -> None:
    """Run one attempt of a job and record its outcome.

    Retry behaviour: a transient failure with tries left raises arq's `Retry`
    with a full-jitter backoff (at least the server's retry-after); a permanent
    failure, or a transient one on the last try, ends the job `failed` with a
    dead letter. At the soft time limit the handler is cancelled so its cleanup
    runs, and the attempt is a transient `job_timeout`. An interrupted attempt
    ends `cancelled` when the client cancelled it; at shutdown it is handed back
    without spending a try.
    """
    deps = ctx["deps"]
    owner = deps.worker_id
    started = await deps.store.mark_started(job_id, kind.name, ctx["job_try"], owner)
    if started is None:
        log.error("job %s has no record (expired?); dropping it", job_id)
        return
    if isinstance(started, Busy):
        log.warning("job %s is running on live worker %s; backing off", job_id, started.owner)
        raise Retry(defer=deps.settings.worker_lease_seconds / 2)
    if started.state.finished:
        log.info("job %s is already %s; not running it", job_id, started.state.value)
        return
    REQUEST_ID_VAR.set(started.request_id)
    JOB_CONTEXT_VAR.set(
        {"job_id": job_id, "kind": kind.name, "account": started.account,
         "attempt": started.attempt}
    )  # fmt: skip
    metrics.JOBS_STARTED.labels(kind.name).inc()
    if isinstance(ctx.get("score"), int):
        metrics.JOB_QUEUE_WAIT_SECONDS.labels(kind.name).observe(
            max(0.0, (now_ms() - ctx["score"]) / 1000)
        )
    task = asyncio.current_task()
    assert task is not None
    deps.running[job_id] = task
    clock = time.monotonic()
    try:
        await _supervise(deps, kind, started, owner)
    finally:
        metrics.JOB_RUN_SECONDS.labels(kind.name).observe(time.monotonic() - clock)
        deps.running.pop(job_id, None)
        deps.fenced_jobs.discard(job_id)


async def _stop(handler: asyncio.Task[Any], grace_s: float) -> None:
    """Cancel the handler and give its cleanup up to `grace_s` to finish."""
    handler.cancel()
    done, _ = await asyncio.wait({handler}, timeout=grace_s)
    if not done:
        log.error("job handler did not finish its cleanup within %.1fs", grace_s)


async def _supervise(deps: WorkerDeps, kind: JobKind, record: JobRecord, owner: str) -> None:
    settings = deps.settings
    started = record.attempts[0]["started_at"] if record.attempts else now_ms()
    soft_s = settings.soft_timeout_seconds
    # Leave a little of the cleanup window to record the outcome before arq's hard stop.
    grace_s = (settings.job_timeout_seconds - soft_s) * 0.8
    run = JobRun(deps=deps, record=record, soft_deadline=time.monotonic() + soft_s)
    clock = time.monotonic()
    handler = asyncio.create_task(kind.handler(run, record.args))
    try:
        done, _ = await asyncio.wait({handler}, timeout=soft_s)
    except asyncio.CancelledError:
        await _stop(handler, grace_s)
        await _record_interruption(deps, record, started, owner)
        raise
    if not done:
        log.warning("job %s reached its soft time limit; cancelling it to clean up", record.id)
        run.soft_limit.set()
        await _stop(handler, grace_s)
        limit = f"JOB_TIMEOUT_SECONDS={settings.job_timeout_seconds:g}"
        timed_out = JobTimedOut(f"the job ran past its time limit ({limit})")
        await _record_failure(deps, record, started, timed_out, owner)
        return
    exc = handler.exception()
    if isinstance(exc, HandBack):
        await _hand_back(deps, record, started, owner, exc)
    if exc is not None:
        await _record_failure(deps, record, started, exc, owner)
        return
    # Imported here: jobs.webhooks imports jobs.views, which imports the kinds, which import us.
    from jobs.webhooks import EVENT_KINDS

    entry = _attempt_entry(record, started, "succeeded")
    try:
        done_ok = await deps.store.finish(
            record,
            JobState.SUCCEEDED,
            owner=owner,
            attempt_entry=entry,
            result=handler.result(),
            progress=1.0,
            stage=None,
            error=None,
            # Only kinds with webhook events need the publisher (3 round trips per job).
            outbox=record.kind in EVENT_KINDS,
        )
    except Exception as exc:
        # A result that cannot be stored (not JSON), or Redis gone for longer than its
        # retries: the attempt fails like any other, so its record never stays `running`.
        await _record_failure(deps, record, started, exc, owner)
        return
    if not done_ok:
        _lost_lease(record)
    deps.arq_finished.add(record.id)
    metrics.JOBS_SUCCEEDED.labels(kind.name).inc()
    log.info(
        "job succeeded",
        extra={"job_id": record.id, "kind": kind.name, "seconds": time.monotonic() - clock},
    )


async def _hand_back(
    deps: WorkerDeps, record: JobRecord, started: int, owner: str, back: HandBack
) -> None:
    """Put the job back in the queue for later without spending a try; raises arq's Retry."""
    defer_s = back.defer_s * deps.rng.uniform(0.8, 1.2)
    due = now_ms() + int(defer_s * 1000)
    entry = _attempt_entry(record, started, "handed_back", reason=back.reason)
    recorded = await deps.store.finish(
        record, JobState.QUEUED, owner=owner, attempt_entry=entry, due_ms=due, undo_try=True
    )
    if not recorded:
        _lost_lease(record)
    log.info("job %s handed back for %.1fs: %s", record.id, defer_s, back.reason)
    raise Retry(defer=defer_s)


def _lost_lease(record: JobRecord) -> None:
    log.error("job %s: this worker lost its lease; the outcome is discarded", record.id)
    # Neither success nor Retry: either would make arq touch a job another worker now runs.
    raise RetryJob()


async def _record_interruption(
    deps: WorkerDeps, record: JobRecord, started: int, owner: str
) -> None:
    if record.id in deps.fenced_jobs:
        return
    cancel_requested = await deps.redis.hexists(record_key(record.id), "cancel_requested_at")
    if cancel_requested:
        entry = _attempt_entry(record, started, "cancelled")
        if await deps.store.finish(record, JobState.CANCELLED, owner=owner, attempt_entry=entry):
            metrics.JOBS_CANCELLED.labels(record.kind).inc()
        log.info("job %s cancelled by its client", record.id)
        return
    # Shutdown: hand the job back for another worker now, without spending a try.
    entry = _attempt_entry(record, started, "interrupted")
    await deps.store.finish(
        record, JobState.QUEUED, owner=owner, attempt_entry=entry, due_ms=now_ms(), undo_try=True
    )
    log.info("job %s handed back at shutdown", record.id)


async def _record_failure(
    deps: WorkerDeps, record: JobRecord, started: int, exc: BaseException, owner: str
) -> None:
    decision = decide(exc, record.attempt, record.max_attempts, deps.settings, deps.rng)
    if decision.retry:
        due = now_ms() + int(decision.defer_s * 1000)
        entry = _attempt_entry(
            record,
            started,
            "retrying",
            error=decision.error,
            defer_seconds=round(decision.defer_s, 3),
            backoff_window_seconds=round(decision.window_s, 3),
        )
        recorded = await deps.store.finish(
            record,
            JobState.RETRYING,
            owner=owner,
            attempt_entry=entry,
            due_ms=due,
            error=decision.error,
            next_attempt_at=due,
        )
        if not recorded:
            _lost_lease(record)
        metrics.JOBS_RETRIED.labels(record.kind).inc()
        log.warning(
            "job attempt %d/%d failed, retrying in %.2fs: %s",
            record.attempt,
            record.max_attempts,
            decision.defer_s,
            decision.error["message"],
            extra={"job_id": record.id, "kind": record.kind},
        )
        raise Retry(defer=decision.defer_s)
    entry = _attempt_entry(record, started, "failed", error=decision.error)
    if not await fail_job(
        deps.store, record, decision.error, decision.traceback, attempt_entry=entry, owner=owner
    ):
        _lost_lease(record)


async def fail_job(
    store: JobStore,
    record: JobRecord,
    error: dict[str, Any],
    traceback: str | None,
    *,
    attempt_entry: dict[str, Any] | None = None,
    orphan_only: bool = False,
    owner: str | None = None,
) -> bool:
    """End a job `failed` with a dead letter, and log it at CRITICAL with its context."""
    done = await store.finish(
        record,
        JobState.FAILED,
        attempt_entry=attempt_entry,
        orphan_only=orphan_only,
        owner=owner,
        error=error,
        traceback=traceback,
    )
    if done:
        metrics.JOBS_FAILED.labels(record.kind).inc()
        metrics.JOBS_DEAD_LETTERED.labels(record.kind).inc()
        log_dead_letter(record, error)
    return done


def log_dead_letter(record: JobRecord, error: dict[str, Any]) -> None:
    """The CRITICAL line every dead letter gets, with its whole context."""
    log.critical(
        "DEAD LETTER: %s job %s failed for good after %d attempt(s): %s",
        record.kind,
        record.id,
        record.attempt,
        error.get("message"),
        extra={
            "job_id": record.id,
            "kind": record.kind,
            "account": record.account,
            "attempt": record.attempt,
            "error": error,
            "arguments": record.args,
        },
    )


def arq_function(kind: JobKind) -> Function:
    """The arq function for a kind: `run_attempt` under the kind's name."""

    async def run(ctx: WorkerContext, job_id: str) -> None:
        await run_attempt(ctx, kind, job_id)

    run.__qualname__ = run.__name__ = f"run_{kind.name.replace('.', '_')}"
    return func(run, name=kind.name)
