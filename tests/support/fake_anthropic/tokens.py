"""Token counting: a deterministic estimate of about 4 characters a token.

A prompt is read as the API caches it: tool definitions, then the system
prompt, then each message's content blocks, in that order. Each block is
counted on its own (rounded up), so the tokens of a prefix are the sum of its
blocks' tokens, which is what prompt caching needs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4


class PromptError(ValueError):
    """A request the real API would refuse with invalid_request_error."""


@dataclass(frozen=True)
class Prompt:
    """What a request costs: its input tokens and the characters they came from."""

    tokens: int
    chars: int


def validate_params(payload: Any, *, creating: bool = True) -> None:
    """Refuse what the real API refuses before reading the prompt (`creating`: a
    Messages call, which needs `max_tokens`; else a token count)."""
    if not isinstance(payload, dict):
        raise PromptError("the request body must be a JSON object")
    if not isinstance(payload.get("model"), str):
        raise PromptError("model: Field required")
    max_tokens = payload.get("max_tokens")
    valid = isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1
    if creating and not valid:
        raise PromptError("max_tokens: Field required (an integer of at least 1)")
    if not isinstance(payload.get("messages"), list) or not payload["messages"]:
        raise PromptError("messages: at least one message is required")


def blocks_of(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """The prompt's blocks in cache-prefix order, each with the section it sits in."""
    blocks: list[tuple[str, Any]] = [("tools", tool) for tool in payload.get("tools") or []]
    system = payload.get("system")
    if isinstance(system, list):
        blocks += [("system", block) for block in system]
    elif system:
        blocks.append(("system", system))
    for n, message in enumerate(payload.get("messages") or []):
        if not isinstance(message, dict):
            raise PromptError(f"messages.{n}: must be an object with a role and content")
        section = f"{message.get('role')}:{n}"
        content = message.get("content")
        if isinstance(content, list):
            blocks += [(section, block) for block in content]
        else:
            blocks.append((section, content or ""))
    return blocks


def block_text(block: Any) -> str:
    """The text of one block that its tokens are counted from."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return json.dumps(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "document":
        source = block.get("source") or {}
        parts = [str(block.get("title") or ""), str(block.get("context") or "")]
        if source.get("type") == "text":
            parts.append(str(source.get("data", "")))
        elif source.get("type") == "content" and isinstance(source.get("content"), list):
            parts += [block_text(b) for b in source["content"]]
        else:
            parts.append(json.dumps(source))
        return "".join(parts)
    if kind == "tool_result" and isinstance(block.get("content"), list):
        return "".join(block_text(b) for b in block["content"])
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"})


def tokens_in(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def read_prompt(payload: dict[str, Any]) -> Prompt:
    """The input tokens of a Messages request (what `count_tokens` answers)."""
    texts = [block_text(block) for _, block in blocks_of(payload)]
    return Prompt(sum(tokens_in(t) for t in texts), sum(len(t) for t in texts))
