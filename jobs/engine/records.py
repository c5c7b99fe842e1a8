"""Job records: states, the record as stored, and what the store's calls answer.

The record, not arq, is the source of truth for a job's state. It is written before
the arq job exists (in the same Lua step), updated by the worker at every transition,
and kept for the kind's retention; a dead letter is kept until it is replayed or purged.
Its keys are in `jobs.engine.keys`; `jobs.engine.store` reads and writes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ulid import ULID

from jobs.errors import InvalidInput


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the state is terminal."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return int(time.time() * 1000)


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def new_job_id() -> str:
    """A new, time-ordered job id."""
    return f"job_{ULID()}"


def text(value: bytes | str | None) -> str | None:
    """A Redis reply as text."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _json_or_none(value: str | None) -> Any:
    return json.loads(value) if value else None


@dataclass(slots=True)
class JobRecord:
    """One job as stored; times are epoch milliseconds."""

    id: str
    kind: str
    account: str
    state: JobState
    attempt: int
    max_attempts: int
    created_at: int
    args: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    stage: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    next_attempt_at: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    traceback: str | None = None
    request_id: str | None = None
    # The W3C trace context of the span that enqueued the job (only while tracing).
    traceparent: str | None = None
    tracestate: str | None = None
    replay_of: str | None = None
    replayed_as: str | None = None
    worker: str | None = None
    crashes: int = 0
    cancel_requested_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_redis(
        cls, raw: dict[bytes, bytes] | list[bytes], attempts: list[bytes] | None = None
    ) -> JobRecord:
        """Build a record from HGETALL output (a dict, or the flat list a Lua script returns)."""
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        h = {text(k): text(v) for k, v in raw.items()}
        return cls(
            id=h["id"] or "",
            kind=h["kind"] or "",
            account=h["account"] or "",
            state=JobState(h["state"]),
            attempt=int(h.get("attempt") or 0),
            max_attempts=int(h.get("max_attempts") or 1),
            created_at=int(h["created_at"] or 0),
            args=_json_or_none(h.get("args")) or {},
            progress=float(h.get("progress") or 0.0),
            stage=h.get("stage") or None,
            started_at=_int_or_none(h.get("started_at")),
            finished_at=_int_or_none(h.get("finished_at")),
            updated_at=_int_or_none(h.get("updated_at")),
            next_attempt_at=_int_or_none(h.get("next_attempt_at")),
            result=_json_or_none(h.get("result")),
            error=_json_or_none(h.get("error")),
            traceback=h.get("traceback") or None,
            request_id=h.get("request_id") or None,
            traceparent=h.get("traceparent") or None,
            tracestate=h.get("tracestate") or None,
            replay_of=h.get("replay_of") or None,
            replayed_as=h.get("replayed_as") or None,
            worker=h.get("worker") or None,
            crashes=int(h.get("crashes") or 0),
            cancel_requested_at=_int_or_none(h.get("cancel_requested_at")),
            attempts=[json.loads(a) for a in attempts or []],
        )


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What `JobStore.create` did: made a new job, or found the one an Idempotency-Key names.

    `record` is the new job's record as written (no second read needed); None on a replay.
    """

    job_id: str
    replayed: bool
    record: JobRecord | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """`mark_started` found the job running on another live worker."""

    owner: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the cursor of the next, if any."""

    items: list[JobRecord]
    next_cursor: str | None


def body_fingerprint(method: str, path: str, body: Any) -> str:
    """A stable digest of a request, to tell a retried request from a different one."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def encode_cursor(score: int, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, member = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 1)
        return int(score), member
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API handed out", type="invalid_cursor") from None
