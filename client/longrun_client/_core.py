"""What the sync and async clients share: settings, request building, reading answers,
translating httpx's exceptions, and the bookkeeping of `wait()`; no network I/O."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import BinaryIO, TypeVar

import httpx

from longrun_client._retry import RetryPolicy
from longrun_client._routes import Call
from longrun_client._sse import ServerSentEvent
from longrun_client._version import __version__
from longrun_client.errors import (
    APIConnectionError,
    APITimeout,
    InvalidResponse,
    JobCancelled,
    JobFailed,
    LongrunError,
    RateLimited,
    ServerError,
    WaitTimeout,
    error_from_response,
)
from longrun_client.models import Job

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 3
# The API sends a keep-alive comment every 15 s; a stream silent for longer is dead.
STREAM_READ_TIMEOUT_S = 20.0
# Polling, when the API gives no Retry-After (it always does for an unfinished job).
DEFAULT_POLL_S = 1.0
MIN_POLL_S = 0.1


class ClientCore:
    """The settings of one client and the steps of a call that do no I/O."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout,
        max_retries: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = RetryPolicy(max_retries=max_retries)
        self.headers = {
            "Accept": "application/json",
            "User-Agent": f"longrun-client/{__version__} httpx/{httpx.__version__}",
            **(headers or {}),
            "Authorization": f"Bearer {api_key}",
        }

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call[T],
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """The request for one attempt of `call`, built anew for each attempt."""
        headers = dict(self.headers)
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=dict(call.params) or None,
            json=call.json,
            data=call.data,
            files=call.files,
            headers=headers,
            timeout=timeout or self.timeout,
        )

    def stream_request(
        self, http: httpx.Client | httpx.AsyncClient, path: str, read_timeout: float
    ) -> httpx.Request:
        """The request of an event stream, whose reads may wait up to `read_timeout`."""
        timeout = httpx.Timeout(
            connect=self.timeout.connect,
            read=read_timeout,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )
        request = self.build(http, Call("GET", path, _unused), timeout=timeout)
        request.headers["Accept"] = "text/event-stream"
        return request

    @staticmethod
    def read(call: Call[T], response: httpx.Response) -> T:
        """The result of `call` from its final answer (whose body has been read); an
        error answer raises its `APIError`."""
        if response.is_error:
            raise error_from_response(response)
        try:
            return call.read(response)
        except ValueError as exc:  # not JSON
            raise InvalidResponse(
                f"{call.method} {call.path}: the answer is not JSON ({exc})",
                response.status_code,
            ) from exc

    @staticmethod
    def check_stream(response: httpx.Response) -> None:
        """Raise unless `response` opened an event stream (an error answer's body must
        have been read)."""
        if response.is_error:
            raise error_from_response(response)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise InvalidResponse(
                f"expected an event stream, got {content_type!r}", response.status_code
            )


def _unused(response: httpx.Response) -> None:
    return None


def connection_error(error: httpx.TransportError) -> APIConnectionError:
    """The client's exception for httpx's transport failure (raise it `from` the cause)."""
    if isinstance(error, httpx.TimeoutException):
        return APITimeout(f"no answer in time: {error!r}")
    return APIConnectionError(f"no answer: {error!r}")


def stream_failure_falls_back(error: LongrunError) -> bool:
    """True when `wait()` should poll after this failure of the event stream: the stream
    could not be opened or broke, for reasons polling may not share. A 404, 401 or 403
    would be the same when polling, so those are raised instead."""
    return isinstance(error, APIConnectionError | InvalidResponse | ServerError | RateLimited)


def job_from_event(event: ServerSentEvent) -> Job | None:
    """The job snapshot a `job` event carries; None for other events."""
    if event.event != "job":
        return None
    try:
        data = json.loads(event.data)
    except ValueError as exc:
        raise InvalidResponse(f"an event's data is not JSON ({exc})") from exc
    return Job.from_json(data)


class Waiter:
    """The bookkeeping of one `wait()`: the deadline, the latest snapshot, the outcome."""

    def __init__(
        self,
        job: Job | str,
        timeout: float | None,
        raise_on_failure: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job if isinstance(job, str) else job.id
        self.latest: Job | None = None if isinstance(job, str) else job
        self.timeout = timeout
        self.raise_on_failure = raise_on_failure
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout

    @property
    def finished(self) -> bool:
        """True once a finished snapshot has been seen."""
        return self.latest is not None and self.latest.finished

    def observe(self, job: Job) -> bool:
        """Record a snapshot; True when the job has finished."""
        self.latest = job
        return job.finished

    def remaining(self) -> float | None:
        """Seconds left, or None without a deadline."""
        return None if self._deadline is None else self._deadline - self._clock()

    def expired(self) -> bool:
        """True when the deadline has passed."""
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def stream_read_timeout(self) -> float:
        """How long one read of the event stream may wait: past the API's keep-alive
        interval, and not past the deadline."""
        remaining = self.remaining()
        if remaining is None:
            return STREAM_READ_TIMEOUT_S
        return max(0.05, min(STREAM_READ_TIMEOUT_S, remaining))

    def poll_delay(self, job: Job) -> float:
        """How long to wait before the next poll: the API's Retry-After, within the
        deadline."""
        delay = max(MIN_POLL_S, job.retry_after if job.retry_after is not None else DEFAULT_POLL_S)
        remaining = self.remaining()
        return delay if remaining is None else max(0.0, min(delay, remaining))

    def outcome(self) -> Job:
        """The finished job, or its exception when asked to raise on failure."""
        job = self.latest
        assert job is not None and job.finished
        if self.raise_on_failure and job.state == "failed":
            raise JobFailed(job)
        if self.raise_on_failure and job.state == "cancelled":
            raise JobCancelled(job)
        return job

    def timed_out(self) -> LongrunError:
        """The exception for a deadline that passed."""
        return WaitTimeout(self.job_id, self.timeout or 0.0, self.latest)


Upload = bytes | BinaryIO | os.PathLike[str]
"""A document to upload: its bytes, a binary file object, or a path."""


def upload_filename(file: Upload, filename: str | None) -> str:
    """The file name to send: the caller's, else the path's or file object's."""
    if filename:
        return filename
    name = os.fspath(file) if isinstance(file, os.PathLike) else getattr(file, "name", None)
    return os.path.basename(name) if isinstance(name, str) and name else "document.txt"


def read_upload(file: Upload) -> bytes:
    """The bytes to upload, read once so that every retry sends them all."""
    if isinstance(file, bytes):
        return file
    if isinstance(file, os.PathLike):
        with open(file, "rb") as f:
            return f.read()
    return file.read()
