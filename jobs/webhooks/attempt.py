"""One HTTP attempt of a delivery: signed afresh, sent to the address the SSRF guard
checked, its answer read raw and capped. It never raises: every failure is an outcome.
`WEBHOOK_TIMEOUT_SECONDS` bounds the whole attempt, resolving the name included."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from jobs import tracing
from jobs.webhooks.ssrf import UnsafeURL, resolve_target
from jobs.webhooks.transport import WebhookClient

# What an attempt keeps of a receiver's answer: its body's first bytes, and at most this
# much of any header or error it logs.
EXCERPT_BYTES = 2048
ERROR_CHARS = 500
USER_AGENT = "longrun-webhooks/0.1"


@dataclass
class AttemptOutcome:
    """What one attempt did; `error` is None on success."""

    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    retry_after: float | None = None

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410

    def notes(self) -> dict[str, Any]:
        """The fields an attempt's history entry carries."""
        return {
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "response_excerpt": self.response_excerpt,
        }


def _retry_after(value: str | None) -> float | None:
    return float(value) if value and value.isdigit() else None


async def attempt_delivery(
    client: WebhookClient,
    url: str,
    signing_secrets: list[str],
    webhook_id: str,
    body: str,
    *,
    timeout_s: float,
    allow_private: bool,
) -> AttemptOutcome:
    """POST the event once, signed afresh with every signing secret; never raises."""
    clock = time.monotonic()
    resolving = True
    try:
        # httpx's timeout bounds each phase; this bounds the attempt: the DNS lookup and a
        # receiver that dribbles its answer byte by byte alike.
        async with asyncio.timeout(timeout_s):
            target = await resolve_target(url, allow_private, timeout_s=None)
            resolving, clock = False, time.monotonic()
            moment = datetime.now(UTC)
            signature = " ".join(
                Webhook(secret).sign(webhook_id, moment, body) for secret in signing_secrets
            )
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                # The answer is read raw: a receiver cannot make us inflate a compressed body.
                "accept-encoding": "identity",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": signature,
            }
            tracing.inject_headers(headers)  # `traceparent` of this attempt's span, if tracing
            request = client.http.build_request(
                "POST", target.url, content=body.encode(), headers=headers
            )
            with client.pinned(target):
                response = await client.http.send(request, stream=True)
                try:
                    excerpt = b""
                    async for chunk in response.aiter_raw():
                        excerpt += chunk
                        if len(excerpt) >= EXCERPT_BYTES:
                            break
                finally:
                    await response.aclose()
    except UnsafeURL as exc:
        return AttemptOutcome(error=f"refused: {exc.message}"[:ERROR_CHARS])
    except (httpx.TimeoutException, TimeoutError):
        if resolving:
            return AttemptOutcome(error=f"the host did not resolve within {timeout_s:g}s")
        return AttemptOutcome(
            error=f"no answer within {timeout_s:g}s",
            latency_ms=round((time.monotonic() - clock) * 1000),
        )
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError, OSError) as exc:
        return AttemptOutcome(
            error=f"{type(exc).__name__}: {exc}"[:ERROR_CHARS],
            latency_ms=round((time.monotonic() - clock) * 1000),
        )
    status = response.status_code
    outcome = AttemptOutcome(
        status_code=status,
        latency_ms=round((time.monotonic() - clock) * 1000),
        response_excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"),
        retry_after=_retry_after(response.headers.get("retry-after")),
    )
    if 300 <= status < 400:
        location = response.headers.get("location", "?")[:ERROR_CHARS]
        outcome.error = f"redirect to {location} (not followed)"
    elif not 200 <= status < 300:
        outcome.error = f"HTTP {status}"
    return outcome
