"""Failure alerts: a dead letter posts a short Slack-compatible message to ALERT_WEBHOOK_URL.

At most `ALERT_MAX_PER_MINUTE` alerts leave in any 60 seconds across all workers
(a sliding window in Redis), so a storm of failures does not flood the channel;
the next alert that goes out says how many were held back.
"""

from __future__ import annotations

import logging
import secrets

import httpx
from redis.asyncio import Redis

from jobs import metrics
from jobs.engine import keys
from jobs.engine.records import JobRecord, now_ms
from jobs.engine.scripts import RATE, RateArgs, RateKeys
from jobs.settings import Settings

log = logging.getLogger("jobs.engine.alerts")

SENT_KEY = keys.domain_key("alerts", "sent")
HELD_KEY = keys.domain_key("alerts", "held")
WINDOW_MS = 60_000


class Alerter:
    """Posts failure alerts, within the rate limit."""

    def __init__(self, redis: Redis, http: httpx.AsyncClient, settings: Settings) -> None:
        self.redis = redis
        self.http = http
        self.settings = settings

    async def dead_letter(self, record: JobRecord) -> bool:
        """Post one alert for a dead letter, unless the rate limit holds it back."""
        url = self.settings.alert_webhook_url
        if not url:
            return False
        allowed = await RATE(
            self.redis,
            RateKeys(window=SENT_KEY),
            RateArgs(
                now_ms=now_ms(),
                window_ms=WINDOW_MS,
                limit=self.settings.alert_max_per_minute,
                member=secrets.token_hex(8),
            ),
        )
        if not allowed:
            await self.redis.incr(HELD_KEY)
            metrics.ALERTS.labels("held_back").inc()
            return False
        held = int(await self.redis.getset(HELD_KEY, 0) or 0)
        error = record.error or {}
        text = (
            f":rotating_light: longrun dead letter: {record.kind} job {record.id} "
            f"(account {record.account}) failed for good after {record.attempt} attempt(s): "
            f"{error.get('type')}: {error.get('message')}"
        )
        if held:
            text += f" ({held} more alert(s) were held back by the rate limit)"
        try:
            answer = await self.http.post(url, json={"text": text[:3000]}, timeout=10)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            metrics.ALERTS.labels("error").inc()
            log.warning("failure alert could not be posted: %s", exc)
            return False
        metrics.ALERTS.labels("sent").inc()
        return True
