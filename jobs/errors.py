"""The service's one error tree.

    ServiceError                 status 500, permanent
    ├── InvalidInput             422  the request or the job's input is wrong
    ├── Unauthorized             401
    ├── Forbidden                403
    ├── NotFound                 404  missing, expired or owned by another account
    ├── Conflict                 409  the resource is in the wrong state
    ├── PayloadTooLarge          413
    ├── UnsupportedMediaType     415
    ├── TooManyRequests          429  a limit refuses it for now: try after `retry_after`
    └── TransientError           503  worth another try, maybe after `retry_after`
        └── JobTimedOut               the job hit its hard time limit

HTTP maps `status` and `type` to a problem+json answer in one handler
(`api/problems.py`); the worker maps `retryable` to arq's `Retry` or a final
failure in one place (`jobs/retry.py`). Vendor exceptions (botocore, httpx,
anthropic) are translated into this tree where the vendor is called.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status: int = 500
    type: str = "internal_error"
    title: str = "Internal error"
    retryable: bool = False

    def __init__(
        self, message: str | None = None, *, type: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        if type is not None:
            self.type = type
        self.extra = extra

    def as_error(self) -> dict[str, Any]:
        """The `error` object stored on a job record."""
        return {"type": self.type, "message": self.message, "retryable": self.retryable}


class InvalidInput(ServiceError):
    status, type, title = 422, "invalid_input", "Invalid input"


class Unauthorized(ServiceError):
    status, type, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(ServiceError):
    status, type, title = 403, "forbidden", "This key may not use this route"


class NotFound(ServiceError):
    status, type, title = 404, "not_found", "Not found"


class Conflict(ServiceError):
    status, type, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ServiceError):
    status, type, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(ServiceError):
    status, type, title = 415, "unsupported_media_type", "Unsupported media type"


class TooManyRequests(ServiceError):
    """A limit refuses the request for now (nothing was done); `retry_after` says when to
    try again and `headers` carry the limit's own (e.g. `RateLimit`)."""

    status, type, title = 429, "too_many_requests", "Too many requests"

    def __init__(
        self,
        message: str | None = None,
        *,
        type: str | None = None,
        retry_after: float = 1.0,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, type=type, **extra)
        self.retry_after = retry_after
        self.headers = headers or {}


class TransientError(ServiceError):
    """A failure worth retrying; `retry_after` is the server's own hint in seconds, if any."""

    status, type, title, retryable = 503, "transient_error", "Temporarily unavailable", True

    def __init__(
        self,
        message: str | None = None,
        *,
        type: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, type=type, **extra)
        self.retry_after = retry_after


class JobTimedOut(TransientError):
    type, title = "job_timeout", "The job hit its time limit"
