"""How one attempt of a job runs and how its outcome is recorded.

arq calls `run_attempt` with a job id under the kind's name (`jobs.engine.arq_adapter`).
The kind's handler gets the record's arguments and a `JobRun`. The outcome goes to the
record, in the same step as arq's side of it: success; the next attempt scheduled by the
kind's retry policy; a final failure (a dead letter for kinds that keep them); or, when the
attempt was interrupted, cancelled or handed back; or, when the handler returns `Continue`,
queued again for its next step, which is no attempt. arq itself never decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from jobs import metrics, tracing
from jobs.engine.context import Continue, HandBack, JobRun, WorkerDeps
from jobs.engine.records import Busy, JobRecord, JobState, now_ms
from jobs.engine.registry import JobKind
from jobs.engine.retry import INFRASTRUCTURE_ERROR, decide
from jobs.engine.store import JobStore
from jobs.errors import JobTimedOut
from jobs.logs import JOB_CONTEXT_VAR, REQUEST_ID_VAR

log = logging.getLogger("jobs.engine.runner")


def _attempt_entry(
    record: JobRecord, started: int, outcome: str, notes: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    # Every recorded attempt passes here once: its span gets the outcome too.
    tracing.set_attribute("longrun.job.outcome", outcome)
    finished = now_ms()
    return {
        "attempt": record.attempt,
        "started_at": started,
        "finished_at": finished,
        "duration_ms": finished - started,
        "worker": record.worker,
        "outcome": outcome,
        **notes,
        **extra,
    }


async def run_attempt(ctx: dict[str, Any], kind: JobKind, job_id: str) -> None:
    """Run one attempt of a job and record its outcome.

    Retry behaviour: a transient failure with attempts left is tried again after the
    kind's backoff (full jitter by default, at least the server's retry-after); a
    permanent failure, or a transient one on the last attempt, ends the job `failed` (a
    dead letter, for kinds that keep them). At the soft time limit the handler is cancelled
    so its cleanup runs, and the attempt is a transient `job_timeout`. An interrupted
    attempt ends `cancelled` when the client cancelled it; at shutdown it is handed back
    without counting.
    """
    deps: WorkerDeps = ctx["deps"]
    owner = deps.worker_id
    started = await deps.store.mark_started(job_id, kind.name, owner)
    if started is None:
        log.error("job %s has no record (expired?); dropping it", job_id)
        return
    if isinstance(started, Busy):
        log.warning("job %s is running on live worker %s; leaving it", job_id, started.owner)
        return
    if started.state.finished:
        log.info("job %s is already %s; not running it", job_id, started.state.value)
        return
    if started.state != JobState.RUNNING:
        # Its client cancelled it between the claim and the start.
        if await deps.store.finish(started, JobState.CANCELLED):
            metrics.JOBS_CANCELLED.labels(kind.name).inc()
        return
    REQUEST_ID_VAR.set(started.request_id)
    JOB_CONTEXT_VAR.set(
        {
            "job_id": job_id,
            "kind": kind.name,
            "account": started.account,
            "attempt": started.attempt,
        }
    )
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
        with tracing.job_span(started, f"attempt {started.attempt}", tracing.CONSUMER):
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
        await _record_interruption(deps, run, started, owner)
        raise
    if not done:
        log.warning("job %s reached its soft time limit; cancelling it to clean up", record.id)
        run.soft_limit.set()
        await _stop(handler, grace_s)
        limit = f"JOB_TIMEOUT_SECONDS={settings.job_timeout_seconds:g}"
        timed_out = JobTimedOut(f"the job ran past its time limit ({limit})")
        await _record_failure(deps, kind, run, started, timed_out, owner)
        return
    exc = handler.exception()
    if isinstance(exc, HandBack):
        await _hand_back(deps, run, started, owner, exc)
        return
    if exc is not None:
        await _record_failure(deps, kind, run, started, exc, owner)
        return
    if isinstance(handler.result(), Continue):
        await _continue(deps, run, owner, handler.result())
        return
    entry = _attempt_entry(record, started, "succeeded", run.notes)
    try:
        recorded = await deps.store.finish(
            record,
            JobState.SUCCEEDED,
            owner=owner,
            attempt_entry=entry,
            result=handler.result(),
            progress=1.0,
            stage=None,
            error=None,
        )
    except Exception as exc:
        # A result that cannot be stored (not JSON), or Redis gone for longer than its
        # retries: the attempt fails like any other, so its record never stays `running`.
        await _record_failure(deps, kind, run, started, exc, owner)
        return
    if not recorded:
        _lost_lease(record)
        return
    metrics.JOBS_SUCCEEDED.labels(kind.name).inc()
    log.info(
        "job succeeded",
        extra={"job_id": record.id, "kind": kind.name, "seconds": time.monotonic() - clock},
    )


async def _hand_back(
    deps: WorkerDeps, run: JobRun, started: int, owner: str, back: HandBack
) -> None:
    """Put the job back in the queue for later; the attempt does not count."""
    defer_s = back.defer_s * deps.rng.uniform(0.8, 1.2)
    due = now_ms() + int(defer_s * 1000)
    entry = _attempt_entry(run.record, started, "handed_back", run.notes, reason=back.reason)
    recorded = await deps.store.finish(
        run.record,
        JobState.QUEUED,
        owner=owner,
        attempt_entry=entry,
        due_ms=due,
        undo_attempt=True,
    )
    if not recorded:
        _lost_lease(run.record)
        return
    log.info("job %s handed back for %.1fs: %s", run.job_id, defer_s, back.reason)


async def _continue(deps: WorkerDeps, run: JobRun, owner: str, step: Continue) -> None:
    """Queue the job again for its next step after `step.defer_s`; the run was no attempt
    (its history entry goes) and its progress stays."""
    due = now_ms() + int(max(0.0, step.defer_s) * 1000)
    recorded = await deps.store.finish(
        run.record,
        JobState.QUEUED,
        owner=owner,
        due_ms=due,
        undo_attempt=True,
        drop_entry=True,
        next_attempt_at=due,
        stage=step.stage or "",
    )
    if not recorded:
        _lost_lease(run.record)
        return
    log.debug("job %s continues in %.1fs (%s)", run.job_id, step.defer_s, step.stage)


def _lost_lease(record: JobRecord) -> None:
    log.error("job %s: this worker lost its lease; the outcome is discarded", record.id)


async def _record_interruption(deps: WorkerDeps, run: JobRun, started: int, owner: str) -> None:
    record = run.record
    if record.id in deps.fenced_jobs:
        return
    if await deps.store.cancel_requested(record.id):
        entry = _attempt_entry(record, started, "cancelled", run.notes)
        if await deps.store.finish(record, JobState.CANCELLED, owner=owner, attempt_entry=entry):
            metrics.JOBS_CANCELLED.labels(record.kind).inc()
        log.info("job %s cancelled by its client", record.id)
        return
    # Shutdown: hand the job back for another worker now; the attempt does not count.
    entry = _attempt_entry(record, started, "interrupted", run.notes)
    await deps.store.finish(
        record,
        JobState.QUEUED,
        owner=owner,
        attempt_entry=entry,
        due_ms=now_ms(),
        undo_attempt=True,
    )
    log.info("job %s handed back at shutdown", record.id)


async def _record_failure(
    deps: WorkerDeps,
    kind: JobKind,
    run: JobRun,
    started: int,
    exc: BaseException,
    owner: str,
) -> None:
    record = run.record
    decision = decide(exc, record.attempt, record.max_attempts, deps.settings, deps.rng, kind)
    tracing.current().fail(decision.error["type"], decision.error["message"], exc)
    if decision.detail:
        # What the job's error leaves out (tenants read it), for operators.
        log.warning("job %s attempt %d: %s", record.id, record.attempt, decision.detail,
                    exc_info=exc)  # fmt: skip
    if decision.error["type"] == INFRASTRUCTURE_ERROR:
        # Redis went away under the handler: not the job's failure, so no attempt is spent.
        back = HandBack(decision.error["message"], defer_s=deps.settings.worker_lease_seconds)
        await _hand_back(deps, run, started, owner, back)
        return
    if decision.retry:
        due = now_ms() + int(decision.defer_s * 1000)
        entry = _attempt_entry(
            record,
            started,
            "retrying",
            run.notes,
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
            return
        metrics.JOBS_RETRIED.labels(record.kind).inc()
        log.warning(
            "job attempt %d/%d failed, retrying in %.2fs: %s",
            record.attempt,
            record.max_attempts,
            decision.defer_s,
            decision.error["message"],
            extra={"job_id": record.id, "kind": record.kind},
        )
        return
    entry = _attempt_entry(record, started, "failed", run.notes, error=decision.error)
    if not await fail_job(
        deps.store,
        kind,
        record,
        decision.error,
        decision.traceback,
        attempt_entry=entry,
        owner=owner,
    ):
        _lost_lease(record)


async def fail_job(
    store: JobStore,
    kind: JobKind | None,
    record: JobRecord,
    error: dict[str, Any],
    traceback: str | None,
    *,
    attempt_entry: dict[str, Any] | None = None,
    orphan_only: bool = False,
    waiting_only: bool = False,
    owner: str | None = None,
) -> bool:
    """End a job `failed`; a dead letter (for kinds that keep them) is logged at CRITICAL
    with its context."""
    done = await store.finish(
        record,
        JobState.FAILED,
        attempt_entry=attempt_entry,
        orphan_only=orphan_only,
        waiting_only=waiting_only,
        owner=owner,
        error=error,
        traceback=traceback,
    )
    if done:
        metrics.JOBS_FAILED.labels(record.kind).inc()
        if kind is None or kind.dead_letters:
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


def entry_for(kind: JobKind) -> Any:
    """What arq runs for a job of `kind`: one attempt of the job whose id it is given."""

    async def entry(ctx: dict[str, Any], job_id: str) -> None:
        await run_attempt(ctx, kind, job_id)

    return entry
