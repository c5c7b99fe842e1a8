"""The public job resource, shared by the status API and webhook payloads."""

from __future__ import annotations

from typing import Any

from jobs.engine.records import JobRecord, rfc3339
from jobs.engine.registry import Registry
from jobs.settings import Settings
from jobs.storage import Storage

__all__ = ["JobPresenter", "attempt_resource", "job_resource", "rfc3339"]


def attempt_resource(entry: dict[str, Any]) -> dict[str, Any]:
    """One attempt as clients see it (the worker's name stays internal)."""
    shown = {k: v for k, v in entry.items() if k != "worker"}
    for name in ("started_at", "finished_at"):
        if isinstance(shown.get(name), int):
            shown[name] = rfc3339(shown[name])
    return shown


def job_resource(record: JobRecord) -> dict[str, Any]:
    """The job resource of the contract, plus `stage`, `replay_of`, `cancel_requested_at`
    and the attempt history."""
    return {
        "id": record.id,
        "kind": record.kind,
        "state": record.state.value,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "progress": record.progress,
        "stage": record.stage,
        "created_at": rfc3339(record.created_at),
        "started_at": rfc3339(record.started_at),
        "finished_at": rfc3339(record.finished_at),
        "next_attempt_at": rfc3339(record.next_attempt_at),
        "result": record.result,
        "error": record.error,
        "replay_of": record.replay_of,
        "cancel_requested_at": rfc3339(record.cancel_requested_at),
        "attempts": [attempt_resource(a) for a in record.attempts],
    }


class JobPresenter:
    """The job resource with its result as its kind presents it at lookup time (an
    export's `download_url` is presigned for each lookup, never stored)."""

    def __init__(self, storage: Storage, settings: Settings, registry: Registry) -> None:
        self.storage = storage
        self.settings = settings
        self.registry = registry

    async def resource(self, record: JobRecord) -> dict[str, Any]:
        return await self.present(job_resource(record))

    async def present(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A stored job resource as shown now."""
        kind = self.registry.kind(str(resource.get("kind")))
        result = resource.get("result")
        if kind is None or kind.present is None or result is None:
            return resource
        return {**resource, "result": await kind.present(self.storage, self.settings, result)}
