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
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from arq import Retry
from arq.worker import Function, func
from redis.asyncio import Redis

from jobs.errors import JobTimedOut
from jobs.records import JobRecord, JobState, JobStore, now_ms
from jobs.retry import decide
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger("jobs.runner")


@dataclass
class WorkerDeps:
    """The clients a worker made in `on_startup`, shared by every job."""

    settings: Settings
    redis: Redis
    store: JobStore
    storage: Storage
    worker_id: str
    rng: random.Random = field(default_factory=random.Random)


class WorkerContext(TypedDict, total=False):
    """arq's `ctx` as this service fills it."""

    redis: Redis
    deps: WorkerDeps
    job_id: str
    job_try: int


@dataclass
class JobRun:
    """What a handler gets besides its arguments: who it runs for, and a progress reporter."""

    deps: WorkerDeps
    record: JobRecord

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def account(self) -> str:
        return self.record.account

    @property
    def attempt(self) -> int:
        return self.record.attempt

    async def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report progress (0..1) and a short stage name; shown by the status API."""
        await self.deps.store.set_progress(self.job_id, min(1.0, max(0.0, fraction)), stage)


Handler = Callable[[JobRun, dict[str, Any]], Awaitable[Any]]


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
    dead letter. A cancelled attempt (shutdown) is recorded and re-raised so
    arq runs it again.
    """
    deps = ctx["deps"]
    store = deps.store
    record = await store.mark_started(job_id, kind.name, ctx["job_try"], deps.worker_id)
    if record is None:
        log.error("job %s has no record (expired?); dropping it", job_id)
        return
    if record.state.finished:
        log.info("job %s is already %s; not running it", job_id, record.state.value)
        return
    started = record.attempts[0]["started_at"] if record.attempts else now_ms()
    run = JobRun(deps=deps, record=record)
    clock = time.monotonic()
    try:
        async with asyncio.timeout(deps.settings.job_timeout_seconds) as limit:
            result = await kind.handler(run, record.args)
    except asyncio.CancelledError:
        entry = _attempt_entry(record, started, "interrupted")
        await asyncio.shield(
            store.finish(record, JobState.QUEUED, attempt_entry=entry, due_ms=now_ms())
        )
        raise
    except Exception as exc:
        if isinstance(exc, TimeoutError) and limit.expired():
            exc = JobTimedOut(
                f"the job ran past JOB_TIMEOUT_SECONDS={deps.settings.job_timeout_seconds:g}"
            )
        await _record_failure(deps, record, started, exc)
        return
    entry = _attempt_entry(record, started, "succeeded")
    await store.finish(
        record,
        JobState.SUCCEEDED,
        attempt_entry=entry,
        result=result,
        progress=1.0,
        stage=None,
        error=None,
    )
    log.info(
        "job succeeded",
        extra={"job_id": job_id, "kind": kind.name, "seconds": time.monotonic() - clock},
    )


async def _record_failure(
    deps: WorkerDeps, record: JobRecord, started: int, exc: Exception
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
        await deps.store.finish(
            record,
            JobState.RETRYING,
            attempt_entry=entry,
            due_ms=due,
            error=decision.error,
            next_attempt_at=due,
        )
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
    await fail_job(deps.store, record, decision.error, decision.traceback, attempt_entry=entry)


async def fail_job(
    store: JobStore,
    record: JobRecord,
    error: dict[str, Any],
    traceback: str | None,
    *,
    attempt_entry: dict[str, Any] | None = None,
    orphan_only: bool = False,
) -> bool:
    """End a job `failed` with a dead letter, and log it at CRITICAL with its context."""
    done = await store.finish(
        record,
        JobState.FAILED,
        attempt_entry=attempt_entry,
        orphan_only=orphan_only,
        error=error,
        traceback=traceback,
    )
    if done:
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
    return done


def arq_function(kind: JobKind) -> Function:
    """The arq function for a kind: `run_attempt` under the kind's name."""

    async def run(ctx: WorkerContext, job_id: str) -> None:
        await run_attempt(ctx, kind, job_id)

    run.__qualname__ = run.__name__ = f"run_{kind.name.replace('.', '_')}"
    return func(run, name=kind.name)
