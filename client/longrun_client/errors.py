"""The client's exceptions: one tree, built from the API's problem+json answers.

    LongrunError
     +-- APIError                 the API answered with an error (RFC 9457 problem details)
     |    +-- BadRequest              400
     |    +-- Unauthorized            401  no key, or a wrong one
     |    +-- Forbidden               403  an account key on an operator route, or the reverse
     |    +-- NotFound                404  missing, or owned by another account
     |    +-- Conflict                409  e.g. cancelling a job that already ended
     |    +-- PayloadTooLarge         413
     |    +-- UnsupportedMediaType    415
     |    +-- ValidationFailed        422  invalid body; an Idempotency-Key reused with another body
     |    +-- RateLimited             429  `retry_after` seconds
     |    +-- ServerError             5xx
     |         +-- ServiceUnavailable     503  `retry_after` seconds
     +-- APIConnectionError       no answer: connection refused or dropped
     |    +-- APITimeout              ... or too slow
     +-- InvalidResponse          an answer the client cannot read (not the API's shape)
     +-- WaitTimeout              `wait()` ran out of time (also a `TimeoutError`)
     +-- JobNotSucceeded          `wait(raise_on_failure=True)` saw the job end badly
     |    +-- JobFailed
     |    +-- JobCancelled
     +-- WebhookVerificationFailed   `verify_webhook()` refused a request
          +-- InvalidWebhookSignature
          +-- StaleWebhookTimestamp

An `APIError` is raised only once the client's own retries (429 and 503, honouring
`Retry-After`) are used up or do not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from longrun_client._retry import parse_retry_after

if TYPE_CHECKING:
    from longrun_client.models import Job

# The members of a problem that have attributes of their own; the rest are `extra`.
_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code"})


class LongrunError(Exception):
    """Everything this client raises on purpose."""


class APIError(LongrunError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status.
        type: the problem type, a URI such as `https://longrun.dev/problems/not-found`.
        code: the short form of `type` (`not_found`), when the API gives one.
        title: a short summary of the kind of problem.
        detail: what went wrong this time, if the API said.
        instance: the path the problem is about.
        extra: the problem's other members (`errors` of a 422, `state` of a 409, ...).
        retry_after: seconds the API asked to wait (`Retry-After`), if it did.
        headers: the answer's headers.
    """

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str | None = None,
        code: str | None = None,
        instance: str | None = None,
        extra: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.code = code
        self.instance = instance
        self.extra: dict[str, Any] = dict(extra or {})
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})
        message = f"{status} {title}" + (f": {detail}" if detail else "")
        super().__init__(message)


class BadRequest(APIError):
    """400."""


class Unauthorized(APIError):
    """401: no API key, or one the API does not know."""


class Forbidden(APIError):
    """403: this key may not use this route."""


class NotFound(APIError):
    """404: no such resource for this account."""


class Conflict(APIError):
    """409: the resource is not in a state that allows this (see `extra`)."""


class PayloadTooLarge(APIError):
    """413: the body is over the API's limit."""


class UnsupportedMediaType(APIError):
    """415."""


class ValidationFailed(APIError):
    """422: the request is not valid; `errors` lists the fields, when the API names them."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The API's per-field errors (`loc`, `msg`, `type`)."""
        errors = self.extra.get("errors")
        return list(errors) if isinstance(errors, list) else []


class RateLimited(APIError):
    """429: too many requests; `retry_after` says how long to wait."""


class ServerError(APIError):
    """5xx: the API or something in front of it failed."""


class ServiceUnavailable(ServerError):
    """503: a dependency is down for now; `retry_after` says when to try again."""


class APIConnectionError(LongrunError):
    """The request got no answer (connection refused, reset or closed); `__cause__` is
    httpx's exception."""


class APITimeout(APIConnectionError):
    """The request got no answer in time."""


class InvalidResponse(LongrunError):
    """The answer is not what the API sends (not JSON, or without a required member)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class WaitTimeout(LongrunError, TimeoutError):
    """`wait()` ran out of time before the job finished; `job` is its latest snapshot
    (None when none was read)."""

    def __init__(self, job_id: str, timeout: float, job: Job | None) -> None:
        self.job_id = job_id
        self.job = job
        state = job.state if job is not None else "unknown"
        super().__init__(f"job {job_id} did not finish within {timeout:g}s (state: {state})")


class JobNotSucceeded(LongrunError):
    """The job ended, but not in `succeeded`; `job` is its final snapshot."""

    def __init__(self, job: Job) -> None:
        self.job = job
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        super().__init__(f"job {job.id} {job.state}{reason}")


class JobFailed(JobNotSucceeded):
    """The job failed for good; `job.error` says why."""


class JobCancelled(JobNotSucceeded):
    """The job was cancelled."""


class WebhookVerificationFailed(LongrunError):
    """A webhook request that must not be trusted: headers missing or malformed."""


class InvalidWebhookSignature(WebhookVerificationFailed):
    """No signature in `webhook-signature` matches the body with any given secret."""


class StaleWebhookTimestamp(WebhookVerificationFailed):
    """`webhook-timestamp` is too far from now (a replay, or a clock far off)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[APIError]:
    """The exception class for an error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer whose body has been read: its problem members
    when it is problem+json (or JSON), else what the status and body say."""
    headers = dict(response.headers)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    try:
        body = response.json()
    except ValueError:
        body = None
    cls = error_class(response.status_code)
    if not isinstance(body, dict):
        text = response.text.strip()[:500] or None
        return cls(
            response.status_code,
            title=response.reason_phrase,
            detail=text,
            retry_after=retry_after,
            headers=headers,
        )

    def text_member(name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) else None

    return cls(
        response.status_code,
        type=text_member("type") or "about:blank",
        title=text_member("title") or response.reason_phrase,
        detail=text_member("detail"),
        code=text_member("code"),
        instance=text_member("instance"),
        extra={k: v for k, v in body.items() if k not in _STANDARD_MEMBERS},
        retry_after=retry_after,
        headers=headers,
    )
