"""The retry policy: which failures are retried, and how long to wait before the next try.

Transient errors (`TransientError`, connection errors, timeouts) are retried
with exponential backoff and full jitter, honouring a server's retry-after;
everything else is permanent and fails the job at once. Exceptions outside the
service's error tree are translated here, once.

What a translated error says is shown to tenants (the job's `error`, its attempts, its
webhook events), so it names what failed and nothing of the inside: no exception text
(hosts, ports, paths, values). An unexpected exception becomes `internal_error` with a
reference; the reference, the exception and its traceback go to the log, and the
traceback (which ends with the exception's message) to the dead letter, for operators.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.engine.registry import JobKind
from jobs.errors import ServiceError, TransientError
from jobs.settings import Settings

# A server's retry-after is honoured up to this long; a bigger one is treated as this.
MAX_RETRY_AFTER_S = 6 * 3600.0
# The error type of Redis going away under a job: the service's trouble, not the job's.
INFRASTRUCTURE_ERROR = "redis_unavailable"


UNEXPECTED = "an unexpected error occurred"
# Redis's refusals while a failover is under way: a demoted primary (READONLY), too few
# replicas for `min-replicas-to-write` (NOREPLICAS), a replica cut from its primary
# (MASTERDOWN), a blocked command ended by the switch (UNBLOCKED), a node still loading.
FAILOVER_REPLIES = ("READONLY", "NOREPLICAS", "MASTERDOWN", "UNBLOCKED", "LOADING", "TRYAGAIN")


def is_failover(exc: BaseException) -> bool:
    """Whether `exc` is Redis being unreachable or switching primaries: worth a retry.
    (The Sentinel client's `MasterNotFoundError` is a ConnectionError; redis-py turns a
    connection lost under a WATCH into a WatchError, which it cannot retry.)"""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ReadOnlyError):
        return True
    if isinstance(exc, WatchError):
        return isinstance(exc.__context__, RedisConnectionError | RedisTimeoutError)
    return isinstance(exc, ResponseError) and str(exc).startswith(FAILOVER_REPLIES)


def as_service_error(exc: BaseException) -> ServiceError:
    """Translate any exception into the error tree, with a message fit for tenants."""
    if isinstance(exc, ServiceError):
        return exc
    if is_failover(exc):
        return TransientError("Redis is unreachable", type=INFRASTRUCTURE_ERROR)
    if isinstance(exc, TimeoutError):
        return TransientError("timed out", type="timeout")
    if isinstance(exc, ConnectionError | OSError):
        return TransientError("a network connection failed", type="connection_error")
    return ServiceError(UNEXPECTED, type="internal_error")


def internal_detail(exc: BaseException) -> str:
    """The exception as operators read it (`Type: message`); never shown to tenants."""
    return f"{type(exc).__name__}: {exc}"


def backoff_window(attempt: int, settings: Settings) -> float:
    """The ceiling of the wait after the `attempt`-th try: base * 2^(attempt-1), capped."""
    exponent = min(attempt - 1, 60)
    return min(settings.job_retry_max_seconds, settings.job_retry_base_seconds * 2**exponent)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt."""

    retry: bool
    error: dict[str, Any]
    traceback: str
    defer_s: float = 0.0
    window_s: float = 0.0
    # The exception as operators read it, when the error shown says less (for the log).
    detail: str | None = None


def full_jitter(attempt: int, settings: Settings, rng: random.Random) -> tuple[float, float]:
    """The default backoff: a uniform wait within the attempt's window; (defer, window)."""
    window = backoff_window(attempt, settings)
    return rng.uniform(0, window), window


def decide(
    exc: BaseException,
    attempt: int,
    max_attempts: int,
    settings: Settings,
    rng: random.Random,
    kind: JobKind | None = None,
) -> Decision:
    """Retry a transient failure with attempts left, after the kind's backoff (full jitter
    by default) and at least the server's retry-after; else fail."""
    error = as_service_error(exc)
    shown = error.as_error()
    detail = None
    if error is not exc:
        detail = internal_detail(exc)
        if error.type == "internal_error":
            shown["message"] = f"{UNEXPECTED} (reference err_{rng.getrandbits(48):012x})"
            detail = f"{shown['message']}: {detail}"
    trace = "".join(traceback.format_exception(exc))
    if not error.retryable or attempt >= max_attempts:
        return Decision(retry=False, error=shown, traceback=trace, detail=detail)
    backoff = kind.backoff if kind is not None and kind.backoff else full_jitter
    defer, window = backoff(attempt, settings, rng)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        defer = max(defer, min(float(retry_after), MAX_RETRY_AFTER_S))
    return Decision(
        retry=True, error=shown, traceback=trace, defer_s=defer, window_s=window, detail=detail
    )
