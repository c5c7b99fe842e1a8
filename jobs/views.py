"""The public job resource, shared by the status API and webhook payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs.records import JobRecord


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


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
