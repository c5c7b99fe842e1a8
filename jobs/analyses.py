"""Analyses: load a document, ask Claude about it, save the analysis to S3.

The document goes to the Messages API as a `document` content block (data), apart from
the client's instructions, under a fixed system prompt, so a document cannot rewrite the
prompt. Token usage is counted per account and model, once per job.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from anthropic.types import Message
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs import metrics
from jobs.claude import Claude, open_claude
from jobs.documents import DocumentMeta, Documents, analysis_key
from jobs.engine import Domain, JobKind, JobRun
from jobs.engine.keys import domain_key
from jobs.engine.retry import is_failover
from jobs.engine.scripts import LuaScript
from jobs.errors import NotFound
from jobs.settings import Settings
from jobs.storage import Storage

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
USAGE_COUNTED_TTL_S = 30 * 24 * 3600
# How often keeping a paid answer is tried again while Redis is away (a failover).
KEEP_RETRY_S = 0.5
log = logging.getLogger("jobs.analyses")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UsageKeys:
    counted: str
    usage: str
    answer: str


@dataclass(frozen=True, slots=True)
class UsageArgs:
    ttl_s: int
    answer_json: str
    answer_ttl_s: int
    increments: tuple[str | int, ...] = ()


COUNT_USAGE = LuaScript("jobs", "usage", UsageKeys, UsageArgs)


# Claude's Message Batches cost half the standard price (economy analysis batches).
PRICE_FACTORS = {"standard": 1.0, "economy": 0.5}


def usage_key(account: str) -> str:
    return domain_key("usage", account)


def economy_usage_key(account: str) -> str:
    """The share of an account's usage answered through Message Batches (half price)."""
    return domain_key("usage", account, "economy")


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
        # The fixed system prompt is the same for every call: cached (prompt caching), it
        # is read at a tenth of the input price once it is long enough to be cached.
        "system": [
            {
                "type": "text",
                "text": settings.analysis_system_prompt,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [{"role": "user", "content": content}],
    }


def answer_key(job_id: str) -> str:
    """Where a job's paid answer waits for the rest of the job (S3 may be down)."""
    return domain_key("analysis-answer", job_id)


def usage_of(message: Message) -> dict[str, int]:
    """The tokens a message used, prompt caching's included (0 when not reported)."""
    usage = message.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
    }


async def count_usage(
    redis: Redis, message_id: str, account: str, model: str, usage: dict[str, int],
    *, job_id: str, answer: dict[str, Any], answer_ttl_s: int,
) -> bool:  # fmt: skip
    """Add one paid call's tokens to its account's usage, once per call (its message id),
    and keep its answer for the job; False when it was already counted."""
    increments: list[str | int] = []
    for name, tokens in usage.items():
        increments += [f"{model}:{name}", tokens]
    counted = await COUNT_USAGE(
        redis,
        UsageKeys(
            counted=domain_key("usage-counted", message_id),
            usage=usage_key(account),
            answer=answer_key(job_id),
        ),
        UsageArgs(
            ttl_s=USAGE_COUNTED_TTL_S,
            answer_json=json.dumps(answer),
            answer_ttl_s=answer_ttl_s,
            increments=tuple(increments),
        ),
    )
    return bool(counted)


async def while_paid_answer_in_memory(run: JobRun, step: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis step between Claude's answer and its keeping (`count_usage`), trying again
    through a Redis outage or failover for as long as the job has time: until it is kept,
    the paid answer is only in this process, and a retry would pay for it again."""
    while True:
        try:
            return await step()
        except (RedisError, OSError) as exc:
            if not is_failover(exc) or run.time_left() <= KEEP_RETRY_S:
                raise
            log.warning("job %s: keeping Claude's answer waits for Redis (%s)", run.job_id, exc)
            await asyncio.sleep(KEEP_RETRY_S)


def _per_model(raw: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for field_name, value in raw.items():
        model, _, name = field_name.decode().rpartition(":")
        models.setdefault(model, {"model": model, **dict.fromkeys(USAGE_FIELDS, 0)})
        models[model][name] = int(value)
    return models


async def account_usage(redis: Redis, account: str) -> list[dict[str, Any]]:
    """Tokens used by an account, per model (every mode together)."""
    models = _per_model(await redis.hgetall(usage_key(account)))
    return sorted(models.values(), key=lambda m: m["model"])


async def account_usage_by_mode(redis: Redis, account: str) -> list[dict[str, Any]]:
    """Tokens used by an account per mode and model, with each mode's price factor:
    `economy` (Message Batches, half price) and `standard` (every other call)."""
    every = _per_model(await redis.hgetall(usage_key(account)))
    economy = _per_model(await redis.hgetall(economy_usage_key(account)))
    rows: list[dict[str, Any]] = []
    for model, used in sorted(every.items()):
        cheap = economy.get(model, dict.fromkeys(USAGE_FIELDS, 0))
        standard = {name: used[name] - cheap.get(name, 0) for name in USAGE_FIELDS}
        for mode, tokens in (("standard", standard), ("economy", cheap)):
            if any(tokens.get(name, 0) for name in USAGE_FIELDS):
                row = {name: tokens.get(name, 0) for name in USAGE_FIELDS}
                rows.append({"mode": mode, "model": model, **row,
                             "price_factor": PRICE_FACTORS[mode]})  # fmt: skip
    return rows


async def save_analysis(
    storage: Storage, meta: DocumentMeta, job_id: str, result: dict[str, Any],
    instructions: str | None,
) -> None:  # fmt: skip
    """Store an analysis at the document's key for `job_id` (a rerun overwrites it)."""
    key = analysis_key(meta.account, meta.user_id, meta.id, job_id)
    stored = {**result, "job_id": job_id, "instructions": instructions}
    await storage.put_bytes(key, json.dumps(stored).encode(), "application/json")


async def run_analysis(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Analyze one document with Claude and store the analysis at the job's own S3 key.

    Retries: Claude's 5xx, a 529 without retry-after, timeouts and dropped connections,
    and S3 outages, are transient; a 429 (or a 529 with retry-after) and waiting for the
    shared budget hand the job back without spending an attempt; a missing document, a
    bad request, a refused key or model, a document too long for the model, and a
    missing ANTHROPIC_API_KEY are permanent. A paid answer is kept, so a retry after a
    later failure (S3) does not pay for it again.
    """
    deps = run.deps
    settings = deps.settings
    documents = Documents(deps.redis, deps.storage, settings.max_document_bytes)
    meta = await documents.get(args["document_id"])
    if meta is None or meta.account != run.account:
        raise NotFound(
            f"document {args['document_id']} no longer exists", type="document_not_found"
        )
    kept = await deps.redis.get(answer_key(run.job_id))
    if kept is not None:
        result = json.loads(kept)
    else:
        document = await documents.load(meta)
        await run.progress(0.1, "waiting_for_claude")
        request = build_request(settings, document, args.get("instructions"))
        message = await deps.get(Claude).create_message(request, run.time_left)
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = usage_of(message)
        result = {"document_id": meta.id, "model": message.model, "analysis": text, "usage": usage}
        retention = settings.job_retention_seconds
        await while_paid_answer_in_memory(run, lambda: run.progress(0.8, "counting"))
        if await while_paid_answer_in_memory(run, lambda: count_usage(
            deps.redis, message.id, run.account, message.model, usage,
            job_id=run.job_id, answer=result, answer_ttl_s=retention,
        )):  # fmt: skip
            for name, tokens in usage.items():
                metrics.CLAUDE_TOKENS.labels(message.model, name.removesuffix("_tokens")).inc(
                    tokens
                )
    await run.progress(0.9, "saving")
    key = analysis_key(meta.account, meta.user_id, meta.id, run.job_id)
    stored = {**result, "job_id": run.job_id, "instructions": args.get("instructions")}
    await deps.storage.put_bytes(key, json.dumps(stored).encode(), "application/json")
    return result


ANALYSIS = JobKind("analysis", run_analysis, events=("analysis.completed", "analysis.failed"))
ANALYSES = Domain("analyses", kinds=[ANALYSIS], resources=[(Claude, open_claude)])
