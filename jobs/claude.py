"""Claude, the Messages API through the official `anthropic` SDK: one client per worker,
the SDK's own retries off (every retry is a job attempt, visible in `attempt`), its errors
translated into the service's error tree here, once, and one budget for all workers.

The organisation's limits (requests, input and output tokens a minute) are one budget kept
in Redis (`lua/claude_budget.lua`): from `CLAUDE_*_PER_MINUTE` when set, otherwise learned
from the `anthropic-ratelimit-*` headers of every answer. A call takes its estimate first
(output at `max_tokens`, as Anthropic counts it) and settles the difference from the
answer's usage. A 429 (or a 529 with `retry-after`) holds every worker's calls until it
has passed. Waiting for the budget is not failing: a short wait is waited out, a longer one
hands the job back (`HandBack`), which spends no attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types import Message
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs import metrics, tracing
from jobs.engine import HandBack
from jobs.engine.keys import domain_key
from jobs.engine.records import now_ms
from jobs.engine.scripts import LuaScript
from jobs.errors import InvalidInput, ServiceError, TransientError
from jobs.settings import Settings

log = logging.getLogger("jobs.claude")
# A wait for the budget up to this long is waited out in the slot; a longer one hands the
# job back to the queue (no attempt spent) and frees the slot for other work.
MAX_INLINE_WAIT_S = 5.0
# A 429 without retry-after holds the budget this long.
DEFAULT_HOLD_S = 5.0
DIMENSIONS = ("requests", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    budget: str
    hold: str
    probe: str


@dataclass(frozen=True, slots=True)
class BudgetArgs:
    op: str
    now_ms: int
    requests: int
    input_tokens: int
    output_tokens: int
    learned: tuple[str, ...] = ()


CLAUDE_BUDGET = LuaScript("jobs", "claude_budget", BudgetKeys, BudgetArgs)


def estimate_tokens(request: Mapping[str, Any]) -> int:
    """The input tokens a request will count, before it is made: about four characters a
    token over its system prompt and messages (the usage corrects it afterwards)."""
    return max(1, math.ceil(len(json.dumps([request.get("system"), request["messages"]])) / 4))


def _headers_learned(headers: Mapping[str, str] | None) -> tuple[str, ...]:
    """(limit, remaining) per dimension from `anthropic-ratelimit-*` headers ('' if absent)."""
    learned: list[str] = []
    for dimension in DIMENSIONS:
        for field in ("limit", "remaining"):
            value = (headers or {}).get(f"anthropic-ratelimit-{dimension}-{field}", "")
            learned.append(value if value.isdigit() else "")
    return tuple(learned)


class ClaudeBudget:
    """The organisation's Claude budget for one model, shared by every worker in Redis."""

    def __init__(self, redis: Redis, settings: Settings, model: str) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = BudgetKeys(
            budget=domain_key("claude", "budget", model),
            hold=domain_key("claude", "hold"),
            probe=domain_key("claude", "probe", model),
        )

    async def configure(self) -> None:
        """Write the configured limits (`CLAUDE_*_PER_MINUTE`); learned ones stay for the rest."""
        configured = (
            ("req", self.settings.claude_requests_per_minute),
            ("in", self.settings.claude_input_tokens_per_minute),
            ("out", self.settings.claude_output_tokens_per_minute),
        )
        for dim, limit in configured:
            if limit:
                fields = {f"{dim}:limit": limit, f"{dim}:fixed": 1}
                if not await self.redis.hexists(self.keys.budget, f"{dim}:cap"):
                    fields |= {
                        f"{dim}:cap": max(1, limit // 60),
                        f"{dim}:tokens": max(1, limit // 60),
                    }
                await self.redis.hset(self.keys.budget, mapping=fields)  # type: ignore[arg-type]
        if any(limit for _, limit in configured):
            await self.redis.hset(self.keys.budget, "learned", 1)

    async def take(self, input_tokens: int, output_tokens: int) -> float:
        """Take one request and the estimate from the budget; 0 when taken, else the seconds
        to wait before asking again (nothing is taken then)."""
        wait_ms = await CLAUDE_BUDGET(
            self.redis,
            self.keys,
            BudgetArgs("take", now_ms(), 1, input_tokens, output_tokens),
        )
        return int(wait_ms) / 1000

    async def settle(
        self, input_tokens: int, output_tokens: int, headers: Mapping[str, str] | None
    ) -> None:
        """Correct the estimate by what the answer used (positive: more than estimated) and
        learn the limits and what is left from its headers."""
        await CLAUDE_BUDGET(
            self.redis,
            self.keys,
            BudgetArgs(
                "settle", now_ms(), 0, input_tokens, output_tokens, _headers_learned(headers)
            ),
        )

    async def hold(self, seconds: float) -> None:
        """Stop every worker's calls for `seconds` (a 429 or 529 said so); a longer hold
        already in place stays."""
        await CLAUDE_BUDGET(
            self.redis, self.keys, BudgetArgs("hold", now_ms(), int(seconds * 1000), 0, 0)
        )


class Claude:
    """A worker's Claude client, the local cap on its concurrent calls, and the shared
    budget (None when `CLAUDE_BUDGET` is off)."""

    def __init__(self, client: AsyncAnthropic | None, settings: Settings, redis: Redis) -> None:
        self.client = client
        self.settings = settings
        self.redis = redis
        self.slots = asyncio.Semaphore(settings.analysis_concurrency)
        self._budgets: dict[str, ClaudeBudget] = {}

    async def budget(self, model: str) -> ClaudeBudget | None:
        """The shared budget of a model, configured on first use; None when it is off."""
        if not self.settings.claude_budget:
            return None
        if model not in self._budgets:
            budget = ClaudeBudget(self.redis, self.settings, model)
            await budget.configure()
            self._budgets[model] = budget
        return self._budgets[model]

    async def create_message(
        self, request: dict[str, Any], time_left: Callable[[], float]
    ) -> Message:
        """One Messages API call within the local cap and the shared budget.

        Waits for a local slot and for the budget while the call would still fit in the
        attempt (`time_left`), else hands the job back; a 429, or a 529 with retry-after,
        holds every worker and hands the job back (no attempt is spent); any other error is
        translated into the error tree.
        """
        if self.client is None:
            raise InvalidInput(
                "ANTHROPIC_API_KEY is not set on the worker: set it and replay this job",
                type="configuration_error",
            )
        model = request["model"]
        left = time_left()
        wait_s = max(left - self.settings.claude_timeout_seconds, left / 2)
        try:
            async with asyncio.timeout(wait_s):
                await self.slots.acquire()
        except TimeoutError:
            raise HandBack(
                f"every Claude slot of this worker (ANALYSIS_CONCURRENCY="
                f"{self.settings.analysis_concurrency}) stayed busy for {wait_s:.0f}s",
                defer_s=min(30.0, max(1.0, wait_s / 4)),
            ) from None
        try:
            return await self._call(request, model, time_left)
        finally:
            self.slots.release()

    async def _call(
        self, request: dict[str, Any], model: str, time_left: Callable[[], float]
    ) -> Message:
        assert self.client is not None
        budget = await self.budget(model)
        estimate_in, estimate_out = estimate_tokens(request), int(request["max_tokens"])
        if budget is not None:
            deadline = time.monotonic() + min(MAX_INLINE_WAIT_S, time_left() / 4)
            while (wait := await budget.take(estimate_in, estimate_out)) > 0:
                if time.monotonic() + wait > deadline:
                    metrics.CLAUDE_BUDGET_WAITS.labels("handed_back").inc()
                    raise HandBack("waiting for the shared Claude budget", defer_s=wait)
                metrics.CLAUDE_BUDGET_WAITS.labels("waited").inc()
                await asyncio.sleep(wait)
        try:
            with tracing.claude_call(request) as call:
                raw = await self.client.messages.with_raw_response.create(**request)
                message = await raw.parse()
                call.answered(message)
        except anthropic.AnthropicError as exc:
            error = translate_claude_error(exc, model)
            metrics.CLAUDE_CALLS.labels(model, error.type).inc()
            response = getattr(exc, "response", None)
            if budget is not None:
                status = getattr(exc, "status_code", None)
                retry_after = getattr(error, "retry_after", None)
                held = status == 429 or (status == 529 and retry_after is not None)
                hold_s = retry_after if retry_after is not None else DEFAULT_HOLD_S
                if held:
                    # Before the settle: the settle may free the first-call probe.
                    await budget.hold(hold_s)
                await budget.settle(-estimate_in, -estimate_out, _headers(response))
                if held:
                    reason = f"Claude asked every caller to wait: {error.message}"
                    raise HandBack(reason, hold_s) from exc
            raise error from exc
        metrics.CLAUDE_CALLS.labels(message.model, "ok").inc()
        if budget is not None:
            usage = message.usage
            used_in = usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            try:
                await budget.settle(
                    used_in - estimate_in, usage.output_tokens - estimate_out, raw.headers
                )
            except (RedisError, OSError):
                # Redis away (a failover): the budget stays at its estimate; the paid answer
                # must not be lost for it.
                log.warning("the Claude budget was not settled; keeping the answer", exc_info=True)
        return message


def _headers(response: Any) -> Mapping[str, str] | None:
    return response.headers if response is not None else None


@asynccontextmanager
async def open_claude(settings: Settings, redis: Redis) -> AsyncIterator[Claude]:
    """The worker's `Claude`, closed when the worker stops."""
    client = create_claude_client(settings)
    try:
        yield Claude(client, settings, redis)
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
