"""What a worker shares with every job (`WorkerDeps`), and what one attempt gets (`JobRun`)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from redis.asyncio import Redis

from jobs.engine.records import JobRecord
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import Storage

if TYPE_CHECKING:
    from jobs.engine.alerts import Alerter
    from jobs.engine.presenter import JobPresenter
    from jobs.engine.registry import Registry

T = TypeVar("T")


@dataclass
class WorkerDeps:
    """The clients a worker made in `on_startup`, shared by every job, and what it runs.

    Domains add clients of their own (`Domain.resources`, e.g. the Claude client), made once
    at start and found by type with `get`.
    """

    settings: Settings
    redis: Redis
    store: JobStore
    storage: Storage
    worker_id: str
    registry: Registry
    presenter: JobPresenter
    http: httpx.AsyncClient
    alerter: Alerter | None = None
    resources: dict[type, Any] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    # job id -> the task running its attempt, so a fenced worker can stop them
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    fenced_jobs: set[str] = field(default_factory=set)

    def get(self, kind: type[T]) -> T:
        """The domain resource of this type (`KeyError` when no domain opened one)."""
        return self.resources[kind]  # type: ignore[no-any-return]

    def fence(self, new_worker_id: str) -> None:
        """This worker was declared dead: stop its jobs without recording their outcome
        (another worker owns them now) and carry on under a new identity."""
        self.worker_id = new_worker_id
        for job_id, task in list(self.running.items()):
            self.fenced_jobs.add(job_id)
            task.cancel()


@dataclass
class JobRun:
    """What a handler gets besides its arguments: who it runs for, progress reporting, its
    soft time limit, and notes for its attempt's history entry."""

    deps: WorkerDeps
    record: JobRecord
    soft_limit: asyncio.Event = field(default_factory=asyncio.Event)
    soft_deadline: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

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

    def note(self, **fields: Any) -> None:
        """Add fields to this attempt's entry in the job's history (e.g. an HTTP status)."""
        self.notes.update(fields)


class HandBack(Exception):
    """Raised by a handler that cannot make progress on this worker now (e.g. it waited
    too long for a shared slot): the job goes back to the queue for `defer_s`, and the
    attempt does not count as a try or a failure."""

    def __init__(self, reason: str, defer_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer_s = defer_s


@dataclass(frozen=True)
class Continue:
    """Returned by a handler whose job has more to do later (a batch between two slices of
    its work, or waiting for a remote batch to end): the job goes back to the queue, due
    after `defer_s`, without holding a worker slot meanwhile. It is not an attempt: no try
    is spent, no failure is recorded, and the run leaves no entry in the job's history.
    `stage` is shown while it waits."""

    defer_s: float = 0.0
    stage: str | None = None
