"""What a worker shares with every job: its settings, clients and running attempts."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from anthropic import AsyncAnthropic
from redis.asyncio import Redis

from jobs.records import JobStore
from jobs.settings import Settings
from jobs.storage import Storage

if TYPE_CHECKING:
    from jobs.alerts import Alerter
    from jobs.views import JobPresenter
    from jobs.webhooks import WebhookStore


@dataclass
class WorkerDeps:
    """The clients a worker made in `on_startup`, shared by every job, and what it runs."""

    settings: Settings
    redis: Redis
    store: JobStore
    storage: Storage
    worker_id: str
    anthropic: AsyncAnthropic | None = None
    http: httpx.AsyncClient | None = None
    webhooks: WebhookStore | None = None
    presenter: JobPresenter | None = None
    alerter: Alerter | None = None
    claude_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    rng: random.Random = field(default_factory=random.Random)
    # job id -> the task running its attempt, so a fenced worker can stop them
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    fenced_jobs: set[str] = field(default_factory=set)
    # jobs whose final record also did arq's end of the job: arq's finish_job is skipped
    arq_finished: set[str] = field(default_factory=set)

    def fence(self, new_worker_id: str) -> None:
        """This worker was declared dead: stop its jobs without recording their outcome
        (another worker owns them now) and carry on under a new identity."""
        self.worker_id = new_worker_id
        for job_id, task in list(self.running.items()):
            self.fenced_jobs.add(job_id)
            task.cancel()
