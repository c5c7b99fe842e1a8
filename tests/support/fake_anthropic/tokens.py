"""Token counting: a deterministic estimate of about 4 characters a token.

A prompt is read as the API caches it: tool definitions, then the system
prompt, then each message's content blocks, in that order. Each block is
counted on its own (rounded up), so the tokens of a prefix are the sum of its
blocks' tokens, which is what prompt caching needs: a block with
`cache_control` ends a prefix that can be cached, keyed by the model and a
hash of every block up to it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
MAX_BREAKPOINTS = 4
TTLS_S = {"5m": 300.0, "1h": 3600.0}


class PromptError(ValueError):
    """A request the real API would refuse with invalid_request_error."""


@dataclass(frozen=True)
class Breakpoint:
    """A cacheable prefix: its key, its tokens and how long a cache entry of it lives."""

    key: bytes
    tokens: int
    ttl_s: float


@dataclass(frozen=True)
class Prompt:
    """What a request costs: its input tokens, the characters they came from, and its
    cache breakpoints in prefix order."""

    tokens: int
    chars: int
    breakpoints: tuple[Breakpoint, ...] = ()


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


def block_chars(block: Any) -> int:
    """The characters of one block that its tokens are counted from: its text, a
    document's title, context and text, or else its JSON."""
    if isinstance(block, str):
        return len(block)
    if not isinstance(block, dict):
        return len(json.dumps(block))
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")))
    if kind == "document":
        source = block.get("source") or {}
        chars = len(str(block.get("title") or "")) + len(str(block.get("context") or ""))
        if source.get("type") == "text":
            return chars + len(str(source.get("data", "")))
        if source.get("type") == "content" and isinstance(source.get("content"), list):
            return chars + sum(block_chars(b) for b in source["content"])
        return chars + len(json.dumps(source))
    if kind == "tool_result" and isinstance(block.get("content"), list):
        return sum(block_chars(b) for b in block["content"])
    return len(json.dumps({k: v for k, v in block.items() if k != "cache_control"}))


def tokens_in(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def read_prompt(payload: dict[str, Any]) -> Prompt:
    """The input tokens of a Messages request (what `count_tokens` answers) and where
    its `cache_control` blocks end cacheable prefixes."""
    blocks = blocks_of(payload)
    sizes = [block_chars(block) for _, block in blocks]
    marked = [n for n, (_, block) in enumerate(blocks) if _cache_control(block) is not None]
    if len(marked) > MAX_BREAKPOINTS:
        raise PromptError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marked)}."
        )
    breakpoints = []
    if marked:
        prefix = hashlib.sha256(str(payload.get("model")).encode())
        tokens = 0
        for n, (section, block) in enumerate(blocks[: marked[-1] + 1]):
            prefix.update(section.encode() + b"\0" + _canonical(block) + b"\0")
            tokens += tokens_in(sizes[n])
            if n in marked:
                breakpoints.append(Breakpoint(prefix.digest(), tokens, _ttl_s(blocks[n][1])))
    return Prompt(sum(tokens_in(n) for n in sizes), sum(sizes), tuple(breakpoints))


def _cache_control(block: Any) -> dict[str, Any] | None:
    return block.get("cache_control") if isinstance(block, dict) else None


def _ttl_s(block: dict[str, Any]) -> float:
    control = block["cache_control"]
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise PromptError("cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTLS_S:
        raise PromptError(f"cache_control.ttl: Input should be '5m' or '1h', not {ttl!r}")
    return TTLS_S[ttl]


def _canonical(block: Any) -> bytes:
    """A block as the cache sees it: its `cache_control` marks a prefix, it is not part
    of it."""
    if isinstance(block, dict) and "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":")).encode()
