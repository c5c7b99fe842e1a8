"""Analyses: load a document, ask Claude about it, save the analysis to S3.

The document goes to the Messages API as a `document` content block (data), apart from
the client's instructions, under a fixed system prompt, so a document cannot rewrite the
prompt. Token usage is counted per account and model, once per job.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import anthropic
from redis.asyncio import Redis

from jobs import metrics
from jobs.claude import Claude, open_claude, translate_claude_error
from jobs.documents import Documents, analysis_key
from jobs.engine import Domain, HandBack, JobKind, JobRun
from jobs.engine.keys import domain_key
from jobs.engine.scripts import LuaScript
from jobs.errors import InvalidInput, NotFound
from jobs.settings import Settings

USAGE_FIELDS = ("input_tokens", "output_tokens")
USAGE_COUNTED_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class UsageKeys:
    counted: str
    usage: str


@dataclass(frozen=True, slots=True)
class UsageArgs:
    ttl_s: int
    increments: tuple[str | int, ...] = ()


COUNT_USAGE = LuaScript("jobs", "usage", UsageKeys, UsageArgs)


def usage_key(account: str) -> str:
    return domain_key("usage", account)


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
    increments: list[str | int] = []
    for name, tokens in usage.items():
        increments += [f"{model}:{name}", tokens]
    counted = await COUNT_USAGE(
        redis,
        UsageKeys(counted=domain_key("usage-counted", job_id), usage=usage_key(account)),
        UsageArgs(ttl_s=USAGE_COUNTED_TTL_S, increments=tuple(increments)),
    )
    return bool(counted)


async def account_usage(redis: Redis, account: str) -> list[dict[str, Any]]:
    """Tokens used by an account, per model."""
    raw = await redis.hgetall(usage_key(account))
    models: dict[str, dict[str, Any]] = {}
    for field_name, value in raw.items():
        model, _, name = field_name.decode().rpartition(":")
        models.setdefault(model, {"model": model, **dict.fromkeys(USAGE_FIELDS, 0)})
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
    claude = deps.get(Claude)
    documents = Documents(deps.redis, deps.storage, settings.max_document_bytes)
    meta = await documents.get(args["document_id"])
    if meta is None or meta.account != run.account:
        raise NotFound(
            f"document {args['document_id']} no longer exists", type="document_not_found"
        )
    if claude.client is None:
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
            await claude.slots.acquire()
    except TimeoutError:
        raise HandBack(
            f"every Claude slot of this worker (ANALYSIS_CONCURRENCY="
            f"{settings.analysis_concurrency}) stayed busy for {wait_s:.0f}s",
            defer_s=min(30.0, max(1.0, wait_s / 4)),
        ) from None
    try:
        await run.progress(0.2, "calling_claude")
        message = await claude.client.messages.create(**request)
    except anthropic.AnthropicError as exc:
        error = translate_claude_error(exc, settings.analysis_model)
        metrics.CLAUDE_CALLS.labels(settings.analysis_model, error.type).inc()
        raise error from exc
    finally:
        claude.slots.release()
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


ANALYSIS = JobKind("analysis", run_analysis, events=("analysis.completed", "analysis.failed"))
ANALYSES = Domain("analyses", kinds=[ANALYSIS], resources=[(Claude, open_claude)])
