"""Prompt caching as the Messages API reports it.

A prefix ending at a `cache_control` block is cached for its TTL (5 minutes,
or 1 hour), refreshed at each hit. A request reads the longest of its
prefixes that is cached (`cache_read_input_tokens`) and writes the rest, up to
its last breakpoint (`cache_creation_input_tokens`); `input_tokens` is what
is left after the last breakpoint. A prefix shorter than the model's minimum
(1024 tokens on most models) is never cached. Cached reads do not count
against the input-token rate limit; writes do.

Not thread-safe: the server holds its lock around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_anthropic.tokens import TTLS_S, Breakpoint, Prompt

MIN_CACHE_TOKENS = 1024
SWEEP_EVERY = 1000


@dataclass(frozen=True)
class CacheUse:
    """What one request reads from the cache and writes to it."""

    read: int = 0
    hit: Breakpoint | None = None
    writes: tuple[Breakpoint, ...] = ()
    written_5m: int = 0
    written_1h: int = 0

    @property
    def written(self) -> int:
        return self.written_5m + self.written_1h

    def usage(self, prompt: Prompt, output_tokens: int, service_tier: str) -> dict[str, Any]:
        """The `usage` of the answer; both cache fields are always there, as in the API."""
        return {
            "input_tokens": prompt.tokens - self.read - self.written,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": self.written,
            "cache_read_input_tokens": self.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.written_5m,
                "ephemeral_1h_input_tokens": self.written_1h,
            },
            "service_tier": service_tier,
        }


@dataclass
class PromptCache:
    """Cached prefixes by key, with the monotonic time each one expires."""

    min_tokens: int = MIN_CACHE_TOKENS
    expires: dict[bytes, float] = field(default_factory=dict)
    _writes: int = 0

    def look_up(self, prompt: Prompt, now: float) -> CacheUse:
        """What `prompt` would read and write now (nothing changes until `commit`)."""
        eligible = [b for b in prompt.breakpoints if b.tokens >= self.min_tokens]
        hit = next((b for b in reversed(eligible) if self.expires.get(b.key, 0.0) > now), None)
        read = hit.tokens if hit else 0
        writes = tuple(b for b in eligible if b.tokens > read)
        by_ttl = dict.fromkeys(TTLS_S.values(), 0)
        start = read
        for breakpoint in writes:
            by_ttl[breakpoint.ttl_s] += breakpoint.tokens - start
            start = breakpoint.tokens
        return CacheUse(read, hit, writes, by_ttl[TTLS_S["5m"]], by_ttl[TTLS_S["1h"]])

    def commit(self, use: CacheUse, now: float) -> None:
        """Refresh the prefix read and store the prefixes written."""
        for breakpoint in (use.hit, *use.writes):
            if breakpoint is not None:
                self.expires[breakpoint.key] = now + breakpoint.ttl_s
        self._writes += len(use.writes)
        if self._writes >= SWEEP_EVERY:
            self._writes = 0
            self.expires = {k: at for k, at in self.expires.items() if at > now}

    def clear(self) -> None:
        self.expires.clear()
