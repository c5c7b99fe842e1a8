"""When to send a request again, and after how long: a pure policy both clients share.

A request is retried when the API answers 429 or 503 (it did nothing: rate limited, or a
dependency is down), after the answer's `Retry-After` (seconds or an HTTP date), else
after a capped exponential back-off with jitter. A request that may safely run twice
(a GET, or a POST carrying an Idempotency-Key, which the API deduplicates) is also
retried after a transport failure and a 502/504 from a gateway; any other request is
retried after a transport failure only when the connection could not even be made, so
it cannot have reached the API.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})
REPEATABLE_RETRY_STATUSES = frozenset({502, 504})
# Transport errors that mean the request was never sent.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: a number of seconds or an HTTP date; None when
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait between attempts of one request.

    Attributes:
        max_retries: attempts after the first; 0 turns retries off.
        backoff_base: the first back-off window, in seconds; it doubles each retry.
        backoff_max: the largest back-off window.
        max_retry_after: a `Retry-After` longer than this is not waited for: the error is
            raised at once, with its `retry_after`, for the caller to schedule.
        random: a source of floats in [0, 1), for the jitter.
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    random: Callable[[], float] = field(default=random.random, repr=False)

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (0-based) when the API gave no
        `Retry-After`: a random point in the upper half of a doubling, capped window."""
        window = min(self.backoff_max, self.backoff_base * 2.0**retry)
        return window / 2 + self.random() * window / 2

    def after_response(
        self, response: httpx.Response, retry: int, repeatable: bool
    ) -> float | None:
        """Seconds to wait before sending the request again after this answer, or None
        to stop here (success, a final error, or retries used up)."""
        status = response.status_code
        if retry >= self.max_retries:
            return None
        if status not in RETRY_STATUSES and not (
            repeatable and status in REPEATABLE_RETRY_STATUSES
        ):
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return self.backoff(retry)
        if retry_after > self.max_retry_after:
            return None
        return retry_after

    def after_error(
        self, error: httpx.TransportError, retry: int, repeatable: bool
    ) -> float | None:
        """Seconds to wait before sending the request again after a transport failure, or
        None to give up."""
        if retry >= self.max_retries:
            return None
        if not (repeatable or isinstance(error, NOT_SENT_ERRORS)):
            return None
        return self.backoff(retry)
