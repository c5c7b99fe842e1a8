"""Verifying the webhooks the API sends, with the `standardwebhooks` library.

Each delivery is signed per Standard Webhooks: `webhook-id`, `webhook-timestamp` and
`webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries: two of them while
an endpoint's secret is being rotated, one made with each secret). A request verifies
when any entry matches with the secret given, and its timestamp is within five minutes
of now (the library's tolerance), which keeps old requests from being replayed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from longrun_client._fields import Resource, parse_datetime
from longrun_client.errors import (
    InvalidWebhookSignature,
    StaleWebhookTimestamp,
    WebhookVerificationFailed,
)
from longrun_client.models import Job

TIMESTAMP_TOLERANCE_S = 5 * 60
"""How far `webhook-timestamp` may be from now (the `standardwebhooks` library's)."""


@dataclass(frozen=True)
class WebhookEvent(Resource):
    """A verified webhook event: `type` (e.g. `export.completed`), `timestamp`, `data`
    (the job resource as JSON; `job` reads it), and `webhook_id`, the same on every
    attempt of this event (use it to ignore a repeat)."""

    type: str
    timestamp: datetime | None
    data: dict[str, Any]
    webhook_id: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def job(self) -> Job:
        """The job this event is about."""
        return Job.from_json(self.data)


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
) -> WebhookEvent:
    """Check a webhook request's signature and timestamp, and return its event.

    Args:
        body: the request body exactly as received (not parsed and serialised again).
        headers: the request's headers (any mapping; names in any case).
        secret: the endpoint's `whsec_` secret, or several (while rotating, the old and
            the new): the request verifies when it was signed with any of them.

    Raises:
        StaleWebhookTimestamp: the timestamp is more than five minutes from now.
        InvalidWebhookSignature: no signature matches the body with the secret(s).
        WebhookVerificationFailed: a header is missing or malformed, or the body is not
            a JSON object.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    if not (webhook_id and timestamp and lowered.get("webhook-signature")):
        raise WebhookVerificationFailed(
            "missing webhook-id, webhook-timestamp or webhook-signature"
        )
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise WebhookVerificationFailed(
            f"webhook-timestamp is not a number: {timestamp!r}"
        ) from None
    if abs(time.time() - sent_at) > TIMESTAMP_TOLERANCE_S:
        raise StaleWebhookTimestamp(f"webhook-timestamp {timestamp} is more than 5 minutes off")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("no secret given")
    payload = _verified_payload(body, lowered, secrets)
    if not isinstance(payload, dict):
        raise WebhookVerificationFailed("the body is not a JSON object")
    data = payload.get("data")
    event_type = payload.get("type")
    return WebhookEvent(
        type=event_type if isinstance(event_type, str) else "",
        timestamp=parse_datetime(payload.get("timestamp")),
        data=data if isinstance(data, dict) else {},
        webhook_id=webhook_id,
        raw=payload,
    )


def _verified_payload(body: bytes | str, headers: dict[str, str], secrets: list[str]) -> Any:
    verifiers = [Webhook(secret) for secret in secrets]  # a secret that is not base64 raises
    for verifier in verifiers:
        try:
            return verifier.verify(body, headers)
        except WebhookVerificationError:
            continue
        except ValueError as exc:  # a malformed signature entry, or a body not JSON/UTF-8
            raise WebhookVerificationFailed(f"unreadable webhook request: {exc}") from exc
    raise InvalidWebhookSignature("no webhook-signature matches the body with the given secret")
