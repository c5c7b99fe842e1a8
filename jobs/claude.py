"""Claude, the Messages API through the official `anthropic` SDK: one client per worker,
the SDK's own retries off (every retry is a job attempt, visible in `attempt`), and its
errors translated into the service's error tree here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from jobs.errors import InvalidInput, ServiceError, TransientError
from jobs.settings import Settings


class Claude:
    """A worker's Claude client and the local cap on its concurrent calls."""

    def __init__(self, client: AsyncAnthropic | None, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.analysis_concurrency)


@asynccontextmanager
async def open_claude(settings: Settings) -> AsyncIterator[Claude]:
    """The worker's `Claude`, closed when the worker stops."""
    client = create_claude_client(settings)
    try:
        yield Claude(client, settings)
    finally:
        if client is not None:
            await client.close()


def create_claude_client(settings: Settings) -> AsyncAnthropic | None:
    """One client per process, with the SDK's retries off; None without an API key."""
    if settings.anthropic_api_key is None:
        return None
    return AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=settings.claude_timeout_seconds,
    )


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def translate_claude_error(exc: anthropic.AnthropicError, model: str) -> ServiceError:
    """Map an SDK error: rate limits, overload, 5xx, 408/409, timeouts and connection errors
    are transient; everything else is permanent, with a message that says what to fix."""
    if isinstance(exc, anthropic.APITimeoutError):
        return TransientError("Claude did not answer in time", type="claude_timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return TransientError(f"Claude is unreachable: {exc}", type="claude_unreachable")
    if not isinstance(exc, anthropic.APIStatusError):
        return TransientError(f"Claude's answer could not be read: {exc}", type="claude_error")
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = (body.get("error") or {}).get("message") or str(exc)
    if status == 429:
        return TransientError(
            f"Claude rate limit: {detail}",
            type="claude_rate_limited",
            retry_after=_retry_after(exc.response),
        )
    if status == 529 or status >= 500 or status in (408, 409):
        return TransientError(
            f"Claude is unavailable ({status}): {detail}",
            type="claude_overloaded" if status == 529 else "claude_unavailable",
            retry_after=_retry_after(exc.response),
        )
    if status == 413 or "too long" in detail.lower():
        return InvalidInput(
            f"the document is too long for {model}: shorten it or split it ({detail})",
            type="document_too_long",
        )
    if status == 401:
        return InvalidInput(
            f"Claude refused the API key: check ANTHROPIC_API_KEY ({detail})",
            type="claude_authentication",
        )
    if status == 403:
        return InvalidInput(
            f"the API key may not use {model}: check its permissions ({detail})",
            type="claude_permission",
        )
    if status == 404:
        return InvalidInput(
            f"Claude does not know the model {model!r}: check ANALYSIS_MODEL ({detail})",
            type="claude_not_found",
        )
    return InvalidInput(
        f"Claude refused the request ({status}): {detail}", type="claude_bad_request"
    )
