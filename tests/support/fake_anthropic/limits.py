"""Rate limits as the Messages API enforces them: continuously refilling token buckets.

Anthropic limits requests, input tokens and output tokens per minute, each a
bucket holding up to its burst (by default a whole minute's worth) that
refills at limit/60 per second, so a burst can briefly exceed the average
before the 429s start. Output tokens are charged from `max_tokens` when a call
starts and corrected to what was written when it ends. Every answer reports
the buckets in `anthropic-ratelimit-*` headers; an unlimited bucket is
reported with a large limit, as the real API always sends the headers.

Not thread-safe: the server holds its lock around every call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

# What an unlimited bucket reports: big enough never to hold a client back.
UNLIMITED = {"requests": 1_000_000, "input-tokens": 1_000_000_000, "output-tokens": 1_000_000_000}
NAMES = {"requests": "requests", "input-tokens": "input tokens", "output-tokens": "output tokens"}


@dataclass(frozen=True)
class RateLimits:
    """Per-minute limits (None: unlimited) and bucket sizes (None: a minute's worth)."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    burst_requests: int | None = None
    burst_input_tokens: int | None = None
    burst_output_tokens: int | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be above 0 (None: unlimited), not {value}")


class Bucket:
    """One token bucket; `per_minute` None is unlimited."""

    def __init__(self, name: str, per_minute: int | None, burst: int | None, now: float) -> None:
        self.name = name
        self.per_minute = per_minute
        self.capacity = float(burst if burst is not None else (per_minute or 0))
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if self.per_minute is not None:
            elapsed = max(0.0, now - self.updated)
            self.level = min(self.capacity, self.level + elapsed * self.per_minute / 60)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until the bucket holds `amount` (until it is full, if it never can)."""
        if self.per_minute is None or self.level >= amount:
            return 0.0
        return (min(amount, self.capacity) - self.level) / (self.per_minute / 60)

    def take(self, amount: float) -> None:
        if self.per_minute is not None:
            self.level -= amount

    def give_back(self, amount: float) -> None:
        if self.per_minute is not None:
            self.level = min(self.capacity, self.level + amount)

    def report(self) -> tuple[int, int, float]:
        """(limit, remaining, seconds until full), as the headers tell them."""
        if self.per_minute is None:
            return UNLIMITED[self.name], UNLIMITED[self.name], 0.0
        missing = max(0.0, self.capacity - self.level)
        return self.per_minute, max(0, math.floor(self.level)), missing * 60 / self.per_minute


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused, and when to come back (whole seconds, as `retry-after`)."""

    retry_after_s: int
    message: str


class RateLimiter:
    """The three buckets of one organisation and model."""

    def __init__(self, limits: RateLimits, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.requests = Bucket("requests", limits.requests_per_minute, limits.burst_requests, now)
        self.input = Bucket(
            "input-tokens", limits.input_tokens_per_minute, limits.burst_input_tokens, now
        )
        self.output = Bucket(
            "output-tokens", limits.output_tokens_per_minute, limits.burst_output_tokens, now
        )

    def _refill(self, now: float) -> tuple[Bucket, Bucket, Bucket]:
        buckets = (self.requests, self.input, self.output)
        for bucket in buckets:
            bucket.refill(now)
        return buckets

    def check(self, input_tokens: int, max_tokens: int, now: float) -> Refusal | None:
        """Why a call (1 request, its uncached input, `max_tokens` of output) cannot be
        admitted now, or None if every bucket covers it."""
        wanted = (1, input_tokens, max_tokens)
        buckets = self._refill(now)
        short = [(b, n) for b, n in zip(buckets, wanted, strict=True) if b.wait_s(n) > 0]
        if not short:
            return None
        wait = max(b.wait_s(n) for b, n in short)
        bucket, amount = short[0]
        message = (
            f"This request would exceed your organization's rate limit of "
            f"{bucket.per_minute:,} {NAMES[bucket.name]} per minute"
        )
        if amount > bucket.capacity:
            message += f" (it needs {amount:,}, more than the {bucket.capacity:,.0f} allowed)"
        return Refusal(max(1, math.ceil(wait)), message + " (fake Messages API).")

    def charge(self, input_tokens: int, max_tokens: int) -> None:
        """Take an admitted call from the buckets (just refilled by `check`)."""
        self.requests.take(1)
        self.input.take(input_tokens)
        self.output.take(max_tokens)

    def settle_output(self, charged: int, used: int, now: float) -> None:
        """Give back the output tokens charged at the start but not written."""
        self.output.refill(now)
        self.output.give_back(max(0, charged - used))

    def headers(self, now: float, wall: float | None = None) -> dict[str, str]:
        """The `anthropic-ratelimit-*` headers; `tokens-*` is the more restrictive of
        input and output (the one with the less left)."""
        wall = time.time() if wall is None else wall
        reports = {b.name: b.report() for b in self._refill(now)}
        token_reports = (reports["input-tokens"], reports["output-tokens"])
        reports["tokens"] = min(token_reports, key=lambda r: (r[1], -r[2]))
        headers = {}
        for name, (limit, remaining, full_in_s) in reports.items():
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339(wall + full_in_s)
        return headers


def rfc3339(at: float) -> str:
    """A UTC time in RFC 3339, to the second (rounded up, so a reset is never early)."""
    return datetime.fromtimestamp(math.ceil(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
