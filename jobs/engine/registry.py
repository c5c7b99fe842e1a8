"""The registry of job kinds: what the engine knows of a domain is what it declares here.

A domain (documents, analyses, exports, webhooks) declares its job kinds: the handler,
the webhook events a finished job emits, how its result is shown to clients, its retry
policy and retention. It may also ask for a client made once per worker (`resources`),
run a chore in every worker (`chores`), or hear of every finished job (`listeners`). The
engine's runner, presenter and outbox read the registry; they never import a domain.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from jobs.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from jobs.engine.context import JobRun, WorkerDeps
    from jobs.engine.records import JobRecord
    from jobs.storage import Storage

Handler = Callable[["JobRun", dict[str, Any]], Awaitable[Any]]
# A stored result as clients see it now (e.g. an export's URL presigned at lookup).
Presenter = Callable[["Storage", Settings, Any], Awaitable[Any]]
# The wait before the next attempt: (attempt just failed, settings, rng) -> (defer s, window s).
Backoff = Callable[[int, Settings, random.Random], tuple[float, float]]
Listener = Callable[["WorkerDeps", "JobRecord", "JobKind"], Awaitable[None]]
# A client a domain needs, made once per worker from the settings and the worker's Redis.
Resource = Callable[[Settings, "Redis"], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its name (also arq's function name), handler and policies.

    `events`: the webhook events of a job that succeeded and of one that failed for good.
    `listed`: whether its jobs appear in `GET /v1/jobs` and the operators' job list.
    `dead_letters`: whether a job that fails for good is kept as a dead letter.
    `max_attempts`, `backoff`, `retention_s`: override the settings' defaults.
    """

    name: str
    handler: Handler
    events: tuple[str, str] | None = None
    present: Presenter | None = None
    listed: bool = True
    dead_letters: bool = True
    max_attempts: Callable[[Settings], int] | None = None
    backoff: Backoff | None = None
    retention_s: Callable[[Settings], int] | None = None

    def attempts_allowed(self, settings: Settings) -> int:
        return self.max_attempts(settings) if self.max_attempts else settings.job_max_tries

    def retention(self, settings: Settings) -> int:
        return self.retention_s(settings) if self.retention_s else settings.job_retention_seconds


@dataclass(frozen=True)
class Periodic:
    """A domain's chore that every worker runs every `interval_s(settings)` seconds."""

    name: str
    interval_s: Callable[[Settings], float]
    step: Callable[[WorkerDeps], Awaitable[object]]


@dataclass(frozen=True)
class Domain:
    """What one domain adds to the service: its kinds and what they need."""

    name: str
    kinds: Sequence[JobKind] = ()
    resources: Sequence[tuple[type, Resource]] = ()
    listeners: Sequence[Listener] = ()
    chores: Sequence[Periodic] = ()


@dataclass
class Registry:
    """Every kind the service runs, and what their domains need, by name."""

    domains: Sequence[Domain]
    kinds: dict[str, JobKind] = field(init=False)

    def __post_init__(self) -> None:
        self.kinds = {}
        for domain in self.domains:
            for kind in domain.kinds:
                if kind.name in self.kinds:
                    raise ValueError(f"job kind {kind.name!r} is declared twice")
                self.kinds[kind.name] = kind

    def kind(self, name: str) -> JobKind | None:
        return self.kinds.get(name)

    def __getitem__(self, name: str) -> JobKind:
        return self.kinds[name]

    def with_kinds(self, extra: Iterable[JobKind]) -> Registry:
        """This registry and more kinds (tests register kinds of their own)."""
        return Registry([*self.domains, Domain("extra", kinds=tuple(extra))])

    def replacing(self, kind: JobKind) -> Registry:
        """This registry with `kind` in place of the declared kind of the same name."""
        return Registry(
            [
                replace(domain, kinds=[kind if k.name == kind.name else k for k in domain.kinds])
                for domain in self.domains
            ]
        )

    def event_types(self) -> list[str]:
        """Every webhook event a kind emits, sorted."""
        return sorted(e for k in self.kinds.values() if k.events for e in k.events)

    @property
    def resources(self) -> list[tuple[type, Resource]]:
        seen: dict[type, Resource] = {}
        for domain in self.domains:
            for kind, opener in domain.resources:
                seen.setdefault(kind, opener)
        return list(seen.items())

    @property
    def listeners(self) -> list[Listener]:
        return [listener for domain in self.domains for listener in domain.listeners]

    @property
    def chores(self) -> list[Periodic]:
        return [chore for domain in self.domains for chore in domain.chores]
