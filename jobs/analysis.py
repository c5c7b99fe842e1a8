"""The analysis job: load a document, ask Claude about it, save the analysis to S3.

The document goes to the Messages API as a `document` content block (data),
apart from the client's instructions, under a fixed system prompt, so a
document cannot rewrite the prompt. The SDK's own retries are off: every
retry is an arq attempt. Claude's errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from redis.asyncio import Redis

from jobs import metrics
from jobs.documents import Documents, analysis_key
from jobs.errors import InvalidInput, NotFound, ServiceError, TransientError
from jobs.records import PREFIX
from jobs.runner import HandBack, JobKind, JobRun
from jobs.settings import Settings

USAGE_SCRIPT = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':input_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':output_tokens', ARGV[3])
  return 1
end
return 0
"""


def usage_key(account: str) -> str:
    return f"{PREFIX}usage:{account}"


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


def build_request(
    settings: Settings, document: dict[str, Any], instructions: str | None
) -> dict[str, Any]:
    """The Messages API request: the document as data, the instructions beside it."""
    content: list[dict[str, Any]] = [
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": document["text"]},
            "title": document.get("title") or document["id"],
        },
        {
            "type": "text",
            "text": instructions
            or "Analyze the document above: summarize it and list its key points.",
        },
    ]
    return {
        "model": settings.analysis_model,
        "max_tokens": settings.analysis_max_tokens,
        "system": settings.analysis_system_prompt,
        "messages": [{"role": "user", "content": content}],
    }


async def count_usage(
    redis: Redis, job_id: str, account: str, model: str, usage: dict[str, int]
) -> bool:
    """Add a job's tokens to its account's usage, once per job even if the job reruns."""
    counted = await redis.eval(
        USAGE_SCRIPT,
        2,
        f"{PREFIX}usage-counted:{job_id}",
        usage_key(account),
        model,
        usage["input_tokens"],
        usage["output_tokens"],
        30 * 24 * 3600,
    )
    return bool(counted)


async def account_usage(redis: Redis, account: str) -> list[dict[str, Any]]:
    """Tokens used by an account, per model."""
    raw = await redis.hgetall(usage_key(account))
    models: dict[str, dict[str, Any]] = {}
    for field_name, value in raw.items():
        model, _, name = field_name.decode().rpartition(":")
        models.setdefault(model, {"model": model, "input_tokens": 0, "output_tokens": 0})
        models[model][name] = int(value)
    return sorted(models.values(), key=lambda m: m["model"])


async def run_analysis(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Analyze one document with Claude and store the analysis at the job's own S3 key.

    Retries: Claude's 429 (after its retry-after), 529, 5xx, timeouts and dropped
    connections, and S3 outages, are transient; a missing document, a bad request,
    a refused key or model, a document too long for the model, and a missing
    ANTHROPIC_API_KEY are permanent.
    """
    deps = run.deps
    settings = deps.settings
    documents = Documents(deps.redis, deps.storage, settings.max_document_bytes)
    meta = await documents.get(args["document_id"])
    if meta is None or meta.account != run.account:
        raise NotFound(
            f"document {args['document_id']} no longer exists", type="document_not_found"
        )
    if deps.anthropic is None:
        raise InvalidInput(
            "ANTHROPIC_API_KEY is not set on the worker: set it and replay this job",
            type="configuration_error",
        )
    document = await documents.load(meta)
    await run.progress(0.1, "waiting_for_claude")
    request = build_request(settings, document, args.get("instructions"))
    # Wait for one of this worker's Claude slots while the call would still fit in the
    # attempt's time; past that, hand the job back rather than time out waiting.
    left = run.time_left()
    wait_s = max(left - settings.claude_timeout_seconds, left / 2)
    try:
        async with asyncio.timeout(wait_s):
            await deps.claude_slots.acquire()
    except TimeoutError:
        raise HandBack(
            f"every Claude slot of this worker (ANALYSIS_CONCURRENCY="
            f"{settings.analysis_concurrency}) stayed busy for {wait_s:.0f}s",
            defer_s=min(30.0, max(1.0, wait_s / 4)),
        ) from None
    try:
        await run.progress(0.2, "calling_claude")
        message = await deps.anthropic.messages.create(**request)
    except anthropic.AnthropicError as exc:
        error = translate_claude_error(exc, settings.analysis_model)
        metrics.CLAUDE_CALLS.labels(settings.analysis_model, error.type).inc()
        raise error from exc
    finally:
        deps.claude_slots.release()
    metrics.CLAUDE_CALLS.labels(message.model, "ok").inc()
    text = "".join(block.text for block in message.content if block.type == "text")
    usage = {
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }
    result = {"document_id": meta.id, "model": message.model, "analysis": text, "usage": usage}
    await run.progress(0.9, "saving")
    key = analysis_key(meta.account, meta.user_id, meta.id, run.job_id)
    stored = {**result, "job_id": run.job_id, "instructions": args.get("instructions")}
    await deps.storage.put_bytes(key, json.dumps(stored).encode(), "application/json")
    if await count_usage(deps.redis, run.job_id, run.account, message.model, usage):
        metrics.CLAUDE_TOKENS.labels(message.model, "input").inc(usage["input_tokens"])
        metrics.CLAUDE_TOKENS.labels(message.model, "output").inc(usage["output_tokens"])
    return result


ANALYSIS = JobKind("analysis", run_analysis)
